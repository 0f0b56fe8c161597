"""`TruncateSettings`: what `intrinsic truncate` measures (stdlib only, so `--help` reads it without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..fields import documented

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class TruncateSettings:
    """Settings of one truncation measurement of a full fine-tuning run."""

    components: str | None = documented(None, "components to truncate, comma-separated: attention, ffn (or mlp), "
                                              "a role (q, k, v, o, gate, up, down, ...), first, middle, last "
                                              "(thirds of the layers); None: all of them")
    ranks: tuple[int, ...] = documented(DEFAULT_RANKS, "the rank grid r90 is read from, comma-separated "
                                                       "(each clamped to a component's widest min(m, n))")
    device: str = documented("auto", "where the SVDs and evaluations run: cpu | cuda | auto (cuda when torch "
                                     "sees a GPU)")

    def __post_init__(self) -> None:
        from .components import parse_ranks

        object.__setattr__(self, "ranks", parse_ranks(self.ranks))
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"`device` must be cpu, cuda or auto, got '{self.device}'")
