"""Serving: the request -> result boundary, the Runpod handlers, actions, health and the job deadline."""
