"""Media: getting inputs (fetch, image decode, named avatars), writing and streaming the MP4, delivering it,
and the A/V sync self-check on the result."""
