"""The record level of CME's expanded positional SPAN file (``pmjax.io.span_pa2``): one line's fields by column,
and the file's records collected by type (docs/span_files.md gives the layout read)."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from decimal import Decimal

from pmjax.core.errors import InputError

#: record types read (the key is the record id: two bytes for the type 8 and 9 families, else the first byte)
READ_RECORDS = ("0", "1", "2", "3", "4", "6", "B", "C", "P", "T", "81", "82", "83", "84")
#: product type codes of the type 2 record; options are OOF (on futures), OOP (on physicals), OOC (on
#: combinations)
OPTION_TYPES = ("OOF", "OOP", "OOC")
KINDS = {"FUT": "future", "CMB": "future", "PHY": "spot"}
#: type S method codes with tiered scanning (the scan risk is summed over scanning tiers); not modelled
TIERED_SCANNING = ("10", "21", "22")


# ------------------------------------------------------------------------------------------ one line


class Line:
    """One record: fields by 1-based inclusive columns, as the published layout gives them."""

    def __init__(self, path: str, number: int, text: str):
        self.path, self.number, self.text = path, number, text

    def error(self, start: int, end: int, name: str, message: str) -> InputError:
        cols = f"column {start}" if start == end else f"columns {start}-{end}"
        return InputError(message, source=f"{self.path} line {self.number}", field=f"{cols} ({name})")

    def raw(self, start: int, end: int, name: str, *, required: bool = False) -> str:
        """The columns' text; past the end of the line blank, unless ``required`` (then a short line is an
        error)."""
        if required and len(self.text) < end:
            raise self.error(start, end, name, f"line too short: it ends at column {len(self.text)}, the field "
                                               f"needs columns {start}-{end}")
        return self.text[start - 1:end].ljust(end - start + 1)

    def code(self, start: int, end: int, name: str, *, required: bool = False) -> str:
        value = self.raw(start, end, name, required=required).strip()
        if required and not value:
            raise self.error(start, end, name, "blank, a code is required")
        return value

    def unsigned(self, start: int, end: int, name: str, *, required: bool = False, default: int | None = None,
                 minus_first: bool = False) -> int | None:
        """A zero-padded number (COBOL 9(n)); blank gives ``default`` unless ``required``. ``minus_first``: a
        leading ``-`` makes it negative (the layout's "put '-' in the first byte")."""
        text = self.raw(start, end, name, required=required)
        s = text.strip()
        if not s:
            if required:
                raise self.error(start, end, name, "blank, a number is required")
            return default
        neg = minus_first and s.startswith("-")
        body = s[1:] if neg else s
        if not body.isascii() or not body.isdigit():
            raise self.error(start, end, name, f"not a number: {text!r} (digits only)")
        return -int(body) if neg else int(body)

    def sign(self, col: int, name: str) -> int:
        """A sign byte: ``-`` is -1; ``+`` or blank is +1; anything else is malformed."""
        c = self.raw(col, col, name)
        if c == "-":
            return -1
        if c in ("+", " "):
            return 1
        raise self.error(col, col, name, f"sign must be '+', '-' or blank, got {c!r}")

    def month(self, start: int, end: int, name: str) -> str:
        """A CCYYMM month, or blank."""
        text = self.raw(start, end, name)
        s = text.strip()
        if s and (len(s) != 6 or not s.isdigit() or not 1 <= int(s[4:]) <= 12):
            raise self.error(start, end, name, f"not a month CCYYMM: {text!r}")
        return s


def scaled_value(value: int, decimals: int) -> float:
    """``value`` with ``decimals`` implied decimal places (negative: that many trailing zeros), exactly rounded."""
    return float(Decimal(value).scaleb(-decimals))


def plain(value: Decimal) -> str:
    """A decimal printed without exponent or trailing zeros: 145, 2.5, 0.0625."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# ------------------------------------------------------------------------------------------ records


@dataclasses.dataclass
class Product:
    commodity: str
    decimals: int  # risk array implied decimal places (locator x its sign)
    line: int


@dataclasses.dataclass
class Commodity:
    exchange: str
    currency: str
    premium_style: bool
    line: Line


@dataclasses.dataclass
class Price:
    settle_decimals: int
    strike_decimals: int
    value_factor: float  # currency per price unit, per contract
    currency: str


@dataclasses.dataclass
class ArrayRecord:
    first: Line
    second: Line
    wide: bool  # 83/84: 8-digit values


class RecordFile:
    """Everything read, by record type, before the contracts are assembled (record order does not matter)."""

    def __init__(self, path: str):
        self.path = path
        self.notes: dict = {"format": "SPAN expanded unpacked (pa2)"}
        self.read: collections.Counter = collections.Counter()
        self.skipped: collections.Counter = collections.Counter()
        self.exchanges: list[str] = []
        self.commodities: dict[str, Commodity] = {}
        self.products: dict[tuple[str, str, str], Product] = {}
        self.tiers: dict[str, list[tuple[int, str, str]]] = collections.defaultdict(list)
        self.intra: dict[str, list[tuple[Line, int, float, list[tuple[int, int, str]]]]] = \
            collections.defaultdict(list)
        self.delivery: dict[str, Line] = {}
        self.inter: list[Line] = []
        self.prices: dict[tuple[str, str, str], Price] = {}
        self.scaling: dict[tuple, float] = {}
        self.fx: dict[tuple[str, str], float] = {}
        self.arrays: list[ArrayRecord] = []
        self._open: Line | None = None  # an 81/83 waiting for its 82/84

    # -------------------------------------------------------------------------------------- dispatch

    def add(self, line: Line) -> None:
        rid = line.text[:2]
        if rid in ("81", "82", "83", "84"):
            key = rid
        elif len(rid) == 1 or rid[1] == " ":
            key = rid[0]
        else:
            key = rid.rstrip()
        handler = getattr(self, f"_r{key}", None) if key in READ_RECORDS else None
        if handler is None:
            self.skipped[key] += 1
            if key == "S":  # not read, but a tiered scan is flagged: one scan per commodity can understate it
                method = line.code(9, 10, "scanning / intercommodity spreading method code")
                if method in TIERED_SCANNING:
                    self.notes.setdefault("tiered_scanning_not_modelled", {})[
                        line.code(3, 8, "combined commodity code")] = method
            return
        self.read[key] += 1
        handler(line)

    def finish(self) -> None:
        if self._open is not None:
            pair = "82" if self._open.text[:2] == "81" else "84"
            raise self._open.error(1, 2, "record id", f"a {self._open.text[:2]} risk array record without its {pair} "
                                                      "(the second physical record must follow)")

    # -------------------------------------------------------------------------------------- headers

    def _r0(self, ln: Line) -> None:
        self.notes["exchange_complex"] = ln.code(3, 8, "exchange complex acronym")
        date = ln.raw(9, 16, "business date CCYYMMDD").strip()
        if date:
            try:
                self.notes["as_of"] = dt.datetime.strptime(date, "%Y%m%d").date().isoformat()
            except ValueError:
                raise ln.error(9, 16, "business date CCYYMMDD", f"not a date CCYYMMDD: {date!r}") from None
        flag = ln.code(17, 17, "settlement or intraday flag")
        if flag:
            self.notes["settlement_or_intraday"] = flag
        fmt = ln.code(36, 37, "file format")
        if fmt == "UP":
            raise ln.error(36, 37, "file format", "a Paris expanded file (UP): its columns differ from the expanded "
                                                  "unpacked layout (U2) that load_pa2 reads")
        if fmt:
            self.notes["file_format_code"] = fmt

    def _r1(self, ln: Line) -> None:
        exchange = ln.code(3, 5, "exchange acronym", required=True)
        if exchange not in self.exchanges:
            self.exchanges.append(exchange)

    def _rT(self, ln: Line) -> None:
        src = ln.code(3, 5, "convert-from currency ISO code", required=True)
        dst = ln.code(7, 9, "convert-to currency ISO code", required=True)
        rate = ln.unsigned(11, 20, "conversion multiplier 9(4)V9(6)", required=True)
        if rate == 0:
            raise ln.error(11, 20, "conversion multiplier 9(4)V9(6)", "a conversion multiplier of 0")
        self.fx[(src, dst)] = scaled_value(rate, 6)

    # -------------------------------------------------------------------------------------- combined commodity

    def _r2(self, ln: Line) -> None:
        exchange = ln.code(3, 5, "exchange acronym", required=True)
        cc = ln.code(7, 12, "combined commodity code", required=True)
        exponent = ln.unsigned(13, 13, "risk exponent", default=0)
        if exponent:
            raise ln.error(13, 13, "risk exponent", f"a risk exponent of {exponent}: the published layout does not "
                                                    "say how it scales the arrays, so load_pa2 reads only 0 or blank")
        currency = ln.code(14, 16, "performance bond currency ISO code", required=True).upper()
        style = ln.code(18, 18, "option margin style")
        if style not in ("", "P", "F"):
            raise ln.error(18, 18, "option margin style", f"must be P (premium), F (futures-style) or blank, got "
                                                          f"{style!r}")
        old = self.commodities.get(cc)
        if old is None:
            self.commodities[cc] = Commodity(exchange, currency, style != "F", ln)
        elif (old.exchange, old.currency) != (exchange, currency):
            raise ln.error(3, 16, "exchange, combined commodity, currency",
                           f"combined commodity {cc} is already defined on line {old.line.number} for exchange "
                           f"{old.exchange} in {old.currency}; type 3, 4 and C records name a combined commodity "
                           "without its exchange, so a code must be unique in the file")
        for k in range(6):  # continuation records add more products
            b = 23 + 16 * k
            product = ln.code(b, b + 9, f"product code {k + 1}")
            if not product:
                continue
            ptype = ln.code(b + 10, b + 12, f"contract type {k + 1}")
            locator = ln.unsigned(b + 13, b + 13, f"risk array value decimal locator {k + 1}", default=0)
            # the locator's sign: '-' makes it negative, any other value means '+'
            sign = -1 if ln.raw(b + 14, b + 14, "risk array value decimal sign") == "-" else 1
            key = (exchange, product, ptype)
            if key in self.products and self.products[key].commodity != cc:
                raise ln.error(b, b + 12, f"product code and contract type {k + 1}",
                               f"product {product} {ptype} of {exchange} is already in combined commodity "
                               f"{self.products[key].commodity} (line {self.products[key].line})")
            self.products[key] = Product(cc, sign * locator, ln.number)

    # -------------------------------------------------------------------------------------- tiers and spreads

    def _r3(self, ln: Line) -> None:
        cc = ln.code(3, 8, "combined commodity code", required=True)
        for k in range(4):
            b = 11 + 14 * k
            tier = ln.unsigned(b, b + 1, f"tier {k + 1} tier number", default=0)
            if not tier:
                continue
            start = ln.month(b + 2, b + 7, f"tier {k + 1} starting contract month")
            end = ln.month(b + 8, b + 13, f"tier {k + 1} ending contract month")
            if not start or not end or end < start:
                raise ln.error(b + 2, b + 13, f"tier {k + 1} contract months",
                               f"tier {tier} needs a starting and an ending month CCYYMM, start <= end "
                               f"(got {start!r}, {end!r})")
            self.tiers[cc].append((tier, start, end))

    def _rC(self, ln: Line) -> None:
        cc = ln.code(3, 8, "combined commodity code", required=True)
        priority = ln.unsigned(11, 12, "spread priority", default=0)
        n_legs = ln.unsigned(13, 14, "number of legs", required=True)
        rate = ln.unsigned(15, 21, "charge rate 9(7)", required=True)
        if not 1 <= n_legs <= 8:
            raise ln.error(13, 14, "number of legs", f"a tier-to-tier spread has 1 to 8 legs, got {n_legs}")
        legs = []
        for k in range(n_legs):
            b = 22 + 7 * k
            tier = ln.unsigned(b + 2, b + 3, f"leg {k + 1} tier number", required=True)
            ratio = ln.unsigned(b + 4, b + 5, f"leg {k + 1} delta per spread ratio", required=True)
            side = ln.code(b + 6, b + 6, f"leg {k + 1} market side", required=True)
            if side not in ("A", "B"):
                raise ln.error(b + 6, b + 6, f"leg {k + 1} market side", f"must be A or B, got {side!r}")
            legs.append((tier, ratio, side))
        self.intra[cc].append((ln, priority, float(rate), legs))

    def _r4(self, ln: Line) -> None:
        cc = ln.code(3, 8, "combined commodity code", required=True)
        if cc in self.delivery:
            raise ln.error(3, 8, "combined commodity code", f"a second type 4 record for {cc} (the first is on line "
                                                            f"{self.delivery[cc].number})")
        self.delivery[cc] = ln

    def _r6(self, ln: Line) -> None:
        self.inter.append(ln)

    # -------------------------------------------------------------------------------------- product parameters

    def _rP(self, ln: Line) -> None:
        key = (ln.code(3, 5, "exchange acronym", required=True), ln.code(6, 15, "product code", required=True),
               ln.code(16, 18, "product type code"))
        settle = ln.unsigned(34, 36, "settlement price decimal locator", default=0, minus_first=True)
        strike = ln.unsigned(37, 39, "strike price decimal locator", default=0, minus_first=True)
        cvf = ln.unsigned(42, 55, "contract value factor 9(7)V9(7)", default=0)
        exp = ln.unsigned(74, 75, "contract value factor exponent", default=0)
        exp_sign = -1 if ln.raw(73, 73, "sign of the contract value factor exponent") == "-" else 1
        currency = ln.code(66, 68, "settlement currency ISO code").upper()
        self.prices[key] = Price(settle, strike, scaled_value(cvf, 7 - exp_sign * exp), currency)

    def _rB(self, ln: Line) -> None:
        key = (ln.code(3, 5, "exchange acronym", required=True), ln.code(6, 15, "commodity code", required=True),
               ln.code(16, 18, "product type code"),
               ln.month(19, 24, "futures contract month") + ln.code(25, 26, "futures contract day or week code"),
               ln.month(28, 33, "option contract month") + ln.code(34, 35, "option contract day or week code"))
        factor = ln.unsigned(86, 91, "delta scaling factor 9(2)V9(4)", default=0)
        if factor:  # blank or zero: not given
            self.scaling[key] = scaled_value(factor, 4)

    # -------------------------------------------------------------------------------------- risk arrays

    def _first(self, ln: Line) -> None:
        if self._open is not None:
            raise self._open.error(1, 2, "record id", f"a {self._open.text[:2]} risk array record without its "
                                                      f"second physical record (line {ln.number} starts another)")
        self._open = ln

    def _second(self, ln: Line, first_id: str) -> None:
        head = self._open
        if head is None or head.text[:2] != first_id:
            raise ln.error(1, 2, "record id", f"a {ln.text[:2]} risk array record without its {first_id} (the first "
                                              "physical record must come before it)")
        if ln.raw(3, 54, "contract key", required=True) != head.raw(3, 54, "contract key", required=True):
            raise ln.error(3, 54, "contract key", f"the contract differs from the {first_id} record on line "
                                                  f"{head.number}: {head.text[2:54].rstrip()!r} vs "
                                                  f"{ln.text[2:54].rstrip()!r}")
        self._open = None
        self.arrays.append(ArrayRecord(head, ln, first_id == "83"))

    def _r81(self, ln: Line) -> None:
        self._first(ln)

    def _r83(self, ln: Line) -> None:
        self._first(ln)

    def _r82(self, ln: Line) -> None:
        self._second(ln, "81")

    def _r84(self, ln: Line) -> None:
        self._second(ln, "83")


# ------------------------------------------------------------------------------------------ assembly
