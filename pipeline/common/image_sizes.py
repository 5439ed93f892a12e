"""The image sizes one engine takes: a fixed ``H×W``, or a range ``min:opt:max`` over which H and W are chosen at run
time (docs/design.md §3b). No heavy imports: the recipe validates with it."""

from __future__ import annotations

import dataclasses

from pipeline.common.errors import PipelineError
from pipeline.common.records import JsonRecord

Size = tuple[int, int]  #: (H, W)


def format_size(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def parse_size(text: str) -> Size:
    """``224`` → (224, 224); ``256x320`` → (256, 320). ValueError naming the text otherwise."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise ValueError(f"expected an image size like 224 or 256x320, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"expected an image size of positive sides like 224 or 256x320, got {text!r}")
    return (parts[0], parts[-1])


@dataclasses.dataclass(frozen=True)
class SizeRange(JsonRecord):
    """The H×W an engine with dynamic height and width takes: its optimization profile's min, opt and max."""

    min: Size
    opt: Size
    max: Size

    @classmethod
    def parse(cls, text: str) -> SizeRange:
        """``320x320:800x1344:1344x1344`` (min:opt:max); ``min:max`` takes opt = max. ValueError on a bad text."""
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"expected a size range min:opt:max like 320x320:800x1344:1344x1344, got {text!r}")
        sizes = [parse_size(part) for part in parts]
        return cls(sizes[0], sizes[len(sizes) // 2] if len(sizes) == 3 else sizes[-1], sizes[-1])

    def __str__(self) -> str:
        return ":".join(format_size(s) for s in (self.min, self.opt, self.max))

    @property
    def dynamic(self) -> bool:
        """Whether more than one size fits the range."""
        return self.min != self.max

    def text(self) -> str:
        """``320x320 to 1344x1344``, or ``224x224`` when only one size fits."""
        return f"{format_size(self.min)} to {format_size(self.max)}" if self.dynamic else format_size(self.min)

    def contains(self, size: Size) -> bool:
        return all(low <= s <= high for low, s, high in zip(self.min, size, self.max, strict=True))

    def check(self, smallest: int) -> None:
        """PipelineError unless min ≤ opt ≤ max in H and in W and every side is at least ``smallest``."""
        if min(*self.min, *self.opt, *self.max) < smallest:
            raise PipelineError(f"--img-size {self}: every side must be at least {smallest} pixels (patch size × 8, so "
                                "that the last stage has a pixel of the image); raise the minimum")
        if not (self.contains(self.opt) and self.contains(self.min) and self.contains(self.max)):
            raise PipelineError(f"--img-size {self}: expected min <= opt <= max in height and in width; reorder "
                                "the sizes as min:opt:max")

    def verification_sizes(self) -> tuple[Size, ...]:
        """Where verification compares an engine: min, opt, max, and a transposed non-square size in the range
        (opt's transpose, else the range's corners), each once."""
        corners = [(self.opt[1], self.opt[0]), (self.max[0], self.min[1]), (self.min[0], self.max[1])]
        transposed = [s for s in corners if s[0] != s[1] and self.contains(s)][:1]
        return tuple(dict.fromkeys((self.min, self.opt, self.max, *transposed)))
