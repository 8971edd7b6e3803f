"""Made-up run names, as W&B gives a run started without one ("adjective-noun-N"), derived from the run id.

The same run id always gives the same name, in every process and Python version (SHA-256, not ``hash()``),
so the SDK's ``run.name`` and every reader's fallback (the runs table, the run page, the CLI, ``Api``) agree
without the name being stored. Only ASCII lower-case letters, digits and '-': a valid name everywhere.
"""

from __future__ import annotations

import hashlib

__all__ = ["ADJECTIVES", "NOUNS", "run_name"]

ADJECTIVES = (
    "amber", "ancient", "autumn", "bold", "brave", "bright", "brisk", "calm", "clever", "cool", "crimson",
    "curious", "dainty", "dark", "dashing", "dawn", "deep", "divine", "dry", "eager", "earnest", "elegant",
    "fancy", "fearless", "fine", "fluent", "fragrant", "fresh", "gentle", "glad", "glorious", "golden",
    "graceful", "grand", "happy", "hardy", "hearty", "honest", "icy", "jolly", "keen", "kind", "lively",
    "lucky", "lunar", "major", "misty", "noble", "olive", "patient", "polar", "proud", "quiet", "rare",
    "royal", "rosy", "serene", "sharp", "silver", "smooth", "solar", "stellar", "still", "sunny", "swift",
    "tender", "tidy", "vital", "warm", "wild", "winter", "wise", "young", "zesty",
)

NOUNS = (
    "aurora", "bird", "blaze", "breeze", "brook", "bush", "butterfly", "canyon", "cloud", "comet", "dawn",
    "dew", "dream", "dune", "eclipse", "ember", "feather", "field", "fire", "firefly", "flower", "fog",
    "forest", "frog", "frost", "galaxy", "glade", "grass", "haze", "hill", "lake", "leaf", "meadow", "moon",
    "morning", "mountain", "night", "oasis", "ocean", "paper", "pine", "planet", "pond", "rain", "resonance",
    "river", "sea", "shadow", "shape", "silence", "sky", "smoke", "snow", "sound", "spaceship", "sparkle",
    "star", "stone", "sun", "sunset", "surf", "thunder", "tree", "valley", "violet", "voice", "water",
    "wave", "wildflower", "wind", "wood",
)

#: N runs 1..NUMBERS: with the word lists, ~500,000 names, so two runs of a project rarely share one
NUMBERS = 99


def run_name(run_id: str) -> str:
    """``"brisk-river-42"``: the made-up name of the run *run_id* (deterministic)."""
    digest = int.from_bytes(hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    digest, adjective = divmod(digest, len(ADJECTIVES))
    digest, noun = divmod(digest, len(NOUNS))
    return f"{ADJECTIVES[adjective]}-{NOUNS[noun]}-{digest % NUMBERS + 1}"
