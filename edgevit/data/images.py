"""Reading a user's image files: a clear error naming the file that cannot be read, or skipping such files.

A dataset scraped or copied by hand nearly always holds a few files that are not images (``.DS_Store`` renamed,
empty downloads, truncated JPEGs). ``data.bad_images`` chooses what happens:

- ``fail`` (default): every file's header is read before training (cheap), and a file that cannot be opened is an
  error naming it (and how many more there are); a file whose header is fine but whose pixels cannot be decoded
  fails when it is first loaded, naming the file.
- ``skip``: every file is decoded before training (slower: a full read of the dataset), the unreadable ones are
  left out, and the run says how many and which.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from PIL import Image

from edgevit.utils import EdgeVitError

BadImages = Literal["fail", "skip"]


def load_rgb(path: str) -> Image.Image:
    """The image at ``path`` as RGB (torchvision's ``pil_loader``), or an EdgeVitError naming the file."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError, truncated file, bad header
        raise EdgeVitError(f"cannot read image {path}: {e}; fix or remove it, or set data.bad_images: skip") from None


def _readable(path: str, decode: bool) -> str | None:
    """None if ``path`` opens (and, with ``decode``, decodes) as an image; else why not."""
    try:
        with Image.open(path) as img:
            if decode:
                img.load()
        return None
    except (OSError, ValueError, SyntaxError) as e:
        return f"{type(e).__name__}: {e}"


def check_images(samples: Sequence[tuple[str, int]], policy: BadImages, root: str | Path) -> list[tuple[str, int]]:
    """``samples`` (``(path, label)`` pairs, as ``ImageFolder`` lists them) without unreadable files.

    Raises:
        EdgeVitError: ``policy`` is ``fail`` and some file cannot be opened (the first is named, with the count).
    """
    if policy not in ("fail", "skip"):
        raise EdgeVitError(f"data.bad_images must be fail or skip, not {policy!r}")
    bad = [(p, why) for p, _ in samples if (why := _readable(p, decode=policy == "skip"))]
    if not bad:
        return list(samples)
    if policy == "fail":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise EdgeVitError(
            f"{len(bad)} of {len(samples)} files under {root} are not readable images, e.g. {bad[0][0]}: "
            f"{bad[0][1]}{more}; fix or remove them, or set data.bad_images: skip"
        )
    names = ", ".join(Path(p).name for p, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
    print(f"edgevit: skipped {len(bad)} unreadable image(s) under {root}: {names}", file=sys.stderr)
    dropped = {p for p, _ in bad}
    return [s for s in samples if s[0] not in dropped]
