"""Random and mutated frames for fuzzing the lab programs, reproducible from a seed.

Pure random bytes rarely get past an Ethernet type check, so most frames start from a valid
request and change it: flipped bytes, truncations, appended bytes, and field changes with the
checksums fixed up afterwards, which reach the program's logic behind the checksum checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from bpflab.packets import IPV4, fix_checksums

ETH_HLEN = 14
MAX_FRAME = 1514


def _flip(rng: random.Random, frame: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    return frame


def _flip_and_fix(rng: random.Random, frame: bytearray) -> bytearray:
    """Change bytes past the Ethernet header, then make the checksums right again."""
    for _ in range(rng.randint(1, 2)):
        frame[rng.randrange(ETH_HLEN, len(frame))] = rng.randrange(256)
    fix_checksums(frame)
    return frame


def _truncate(rng: random.Random, frame: bytearray) -> bytearray:
    return frame[: rng.randrange(ETH_HLEN, len(frame))]


def _extend(rng: random.Random, frame: bytearray) -> bytearray:
    return frame + rng.randbytes(rng.randint(1, 64))


def _length_lie(rng: random.Random, frame: bytearray) -> bytearray:
    """Make the IP length field disagree with the frame, checksums fixed."""
    at = 16 if frame[12:14] == IPV4.to_bytes(2, "big") else 18
    frame[at : at + 2] = rng.randrange(65536).to_bytes(2, "big")
    fix_checksums(frame)
    return frame


MUTATIONS: list[Callable[[random.Random, bytearray], bytearray]] = [
    _flip, _flip_and_fix, _flip_and_fix, _truncate, _extend, _length_lie,
]


def frames(seeds: list[bytes], count: int, seed: int = 0) -> Iterator[bytes]:
    """`count` frames: a quarter random, a quarter random behind a seed's headers, half mutated."""
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.random()
        base = bytearray(rng.choice(seeds))
        if kind < 0.25:
            frame = bytearray(rng.randbytes(rng.randint(ETH_HLEN, MAX_FRAME)))
        elif kind < 0.5:
            keep = rng.randint(ETH_HLEN, min(len(base), 58))
            frame = base[:keep] + rng.randbytes(rng.randint(0, 200))
        else:
            frame = rng.choice(MUTATIONS)(rng, base)
        yield bytes(frame[:MAX_FRAME])
