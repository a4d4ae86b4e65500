"""eSpeak's phoneme names (IPA) -> the ARPAbet-like labels the viseme table (`visemes.py`) knows.

eSpeak reports its phonemes in IPA when initialised with `espeakINITIALIZE_PHONEME_IPA`. We use
IPA rather than eSpeak's own mnemonics because the mnemonics are per-language tables ("y" is the
rounded front vowel in German but the unrounded central vowel in Russian); IPA is one alphabet
for every language. Only what the lips show matters here: each symbol goes to the English phone
with the closest mouth shape (e.g. French/German rounded front vowels -> UW/AO, trills -> D).
"""

from __future__ import annotations

import unicodedata

# stress, length, tie bars, syllabicity and secondary articulations do not change the lip shape
_DROP = set("ˈˌːˑ.-‿͜͡ʰʲʷˠˤ̃ʼ")

_DIPHTHONGS = {"aɪ": "AY", "ai": "AY", "aʊ": "AW", "au": "AW", "ɑʊ": "AW", "ɑu": "AW", "eɪ": "EY", "ei": "EY",
               "ɔɪ": "OY", "ɔi": "OY", "oʊ": "OW", "əʊ": "OW", "ou": "OW", "eə": "EH", "ɪə": "IH", "ʊə": "UH"}

_SYMBOLS = {
    # lips closed
    **dict.fromkeys("pɓ", "P"), **dict.fromkeys("bʙ", "B"), "m": "M",
    # upper teeth on lower lip, or lips nearly together (bilabial fricatives/approximant)
    **dict.fromkeys("fɸɱ", "F"), **dict.fromkeys("vβʋⱱ", "V"),
    # rounded glides
    **dict.fromkeys("wʍɥ", "W"),
    # tongue consonants: lips slightly open, teeth close
    **dict.fromkeys("tʈʔ", "T"), **dict.fromkeys("dɖɗ", "D"), **dict.fromkeys("kcq", "K"),
    **dict.fromkeys("gɡɟɢɠʛ", "G"), **dict.fromkeys("nɳɲɴ", "N"), "ŋ": "NG",
    **dict.fromkeys("sɕʂ", "S"), **dict.fromkeys("zʑʐ", "Z"), "ʃ": "SH", "ʒ": "ZH", "θ": "TH", "ð": "DH",
    **dict.fromkeys("hɦħʕxɣχçʝʜʢ", "HH"), **dict.fromkeys("jʎ", "Y"),
    **dict.fromkeys("lɫɭɬɮʟɺ", "L"),
    # rhotics: English approximant rounds the lips; trills, taps and uvulars do not
    **dict.fromkeys("ɹɻ", "R"), **dict.fromkeys("rɾɽʀʁ", "D"),
    # vowels
    **dict.fromkeys("iɨ", "IY"), **dict.fromkeys("ɪᵻɯ", "IH"), "e": "EH", "ɛ": "EH", "æ": "AE",
    **dict.fromkeys("aɑä", "AA"), **dict.fromkeys("ɐʌəɘɜɤ", "AH"), **dict.fromkeys("ɚɝ", "ER"),
    **dict.fromkeys("ɔɒoɵøœɞɶ", "AO"), **dict.fromkeys("uy", "UW"), **dict.fromkeys("ʊʏ", "UH"),
}


def _core(name: str) -> str:
    decomposed = unicodedata.normalize("NFD", name)
    return "".join(ch for ch in decomposed if ch not in _DROP and not unicodedata.combining(ch))


def phone_label(ipa: str) -> str | None:
    """The ARPAbet-like label for one eSpeak phoneme name; "SIL" for pauses and unknown symbols.

    None for a modifier reported as a phoneme of its own (Russian palatalisation "ʲ"): it belongs
    to the phone before it.
    """
    if not ipa:
        return "SIL"
    core = _core(ipa)
    if not core:
        return None
    if core[:2] in _DIPHTHONGS:
        return _DIPHTHONGS[core[:2]]
    # affricates and clusters (tʃ, ts, pf) start with the shape of their first symbol
    for ch in core:
        if ch in _SYMBOLS:
            return _SYMBOLS[ch]
    return "SIL"
