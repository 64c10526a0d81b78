"""Noised output for back-translation: Edunov et al. (2018)'s "beam+noise".

Owns turning a translation into a noised one, word by word, with a random
generator that depends only on the seed and the line (`line_random`), so a
resumed or sharded job noises every line exactly as an uninterrupted one.

Edunov, Ott, Auli and Grangier, "Understanding Back-Translation at Scale" (EMNLP
2018): the beam output of the reverse model is noised as in Lample et al.
(2018) by (1) deleting words with probability 0.1, (2) replacing words by a
filler token with probability 0.1, (3) swapping words by a random permutation
that moves no word further than three positions. We follow the authors' own
script (gist edunov/d67d09a38e75409b8408ed86489645dd): shuffle first (each
position i gets the key i + U(0, 3), words are sorted by key), then delete
(keeping one random word when all would go), then blank. Words are the
detokenized text split on whitespace, joined with single spaces.

Leaves the search to mtkit.search (whose splitmix64 `mix64` seeds the lines here too)
and the files to mtkit.translate.stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mtkit.errors import ConfigError
from mtkit.search import mix64
from mtkit.tokenizer import BLANK_PIECE

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class NoiseOptions:
    """Edunov et al. (2018)'s noise; `noised` turns it on, the rest are the paper's values."""

    noised: bool = False
    noise_delete: float = 0.1  # probability that a word is deleted
    noise_blank: float = 0.1  # probability that a word is replaced by noise_filler
    noise_shuffle: float = 3.0  # k: a word moves fewer than k positions
    noise_filler: str = BLANK_PIECE  # a piece train-bpe reserves


def check_noise(options: NoiseOptions) -> None:
    """ConfigError for noise options out of range."""
    for name in ("noise_delete", "noise_blank"):
        value = getattr(options, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    if options.noise_shuffle < 0:
        raise ConfigError(f"--noise-shuffle must not be negative, got {options.noise_shuffle}")
    if not options.noise_filler or any(c.isspace() for c in options.noise_filler):
        raise ConfigError(
            f"--noise-filler must be one word without spaces, got {options.noise_filler!r}"
        )


def line_random(seed: int, key: int) -> random.Random:
    """The generator for one line: a function of the seed and the line's key only."""
    return random.Random(mix64(mix64(seed) ^ (key & _MASK)))


def noise_words(text: str, options: NoiseOptions, rng: random.Random) -> str:
    """`text` shuffled locally, with words deleted and blanked (see the module docstring)."""
    words = text.split()
    if not words:
        return text
    keys = [i + rng.random() * options.noise_shuffle for i in range(len(words))]
    words = [w for _, w in sorted(zip(keys, words, strict=True), key=lambda kw: kw[0])]
    kept = [w for w in words if rng.random() >= options.noise_delete]
    if not kept:  # an empty side would be dropped from the corpus: keep one word
        kept = [words[rng.randrange(len(words))]]
    return " ".join(options.noise_filler if rng.random() < options.noise_blank else w for w in kept)
