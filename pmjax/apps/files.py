"""Small helpers of the report: the output directory check and the TIMS-style section."""

from __future__ import annotations

import html
import os

from pmjax.core.errors import InputError


def check_out_dir(path: str, flag: str = "--out") -> str:
    """Make sure ``path`` is (or can be made) a writable directory, before anything is computed.

    Creates it (and its parents) and writes and removes a probe file there; raises ``InputError`` naming
    ``flag`` when it is an existing file, cannot be created or cannot be written.
    """
    if not path:
        raise InputError("must name a directory", source=flag)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{path} exists and is not a directory", source=flag)
    existed = os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create directory {path}: {e.strerror or e}", source=flag) from None
    probe = os.path.join(path, f".pmjax-write-test-{os.getpid()}")
    try:
        with open(probe, "wb") as fh:
            fh.write(b"")
        os.remove(probe)
    except OSError as e:
        if not existed:
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise InputError(f"cannot write into {path}: {e.strerror or e}", source=flag) from None
    return path


def tims_table(tims: dict, cur: str) -> tuple[list[str], list[list], str]:
    """The TIMS-style section's (header, rows, note): per class group the worst valuation point, the offset, the
    minimum and the requirement (docs/tims.md)."""
    rows = [[u, v["worst_point"], f"{100 * v['worst_move']:+.2f}%", v["loss"][v["worst_point"] - 1],
             v["offset_applied"], v["risk"], v["minimum"], v["requirement"]] for u, v in tims["by_underlying"].items()]
    header = ["class group", "worst point", "price move", f"loss ({cur})", "offset", "risk", "minimum",
              f"requirement ({cur})"]
    note = (f"<p>total {tims['total']:,.2f} {html.escape(cur)} (ten equally spaced price points across +-the class "
            "range; product-group offsets; per-contract minimum; docs/tims.md)</p>")
    return header, rows, note
