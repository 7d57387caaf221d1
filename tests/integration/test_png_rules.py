"""NOTE [png rules]: malformed PNGs get one outcome from Pillow and libpng, and a named error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hostile_corpus import _chunk, _rows, crafted_png, png_adler_cut, png_idat_length
from PIL import Image

from tfpathloader import ImageLoadError
from tfpathloader.load import decode
from tfpathloader.load._crop import decode_into
from tfpathloader.load._png_rules import _ADAM7, _DEPTHS, _SAMPLES, filtered_size
from tfpathloader.load.decode import as_array, check_bytes, decode_image, load_image

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (8, 8, 3), np.uint8)
GREY = RNG.integers(0, 256, (8, 8), np.uint8)
ROWS = _rows(RGB)
STREAM = zlib.compress(ROWS)


def _ihdr(w=8, h=8, depth=8, colour=2, method=0, filtering=0, interlace=0) -> bytes:
    return struct.pack(">IIBBBBB", w, h, depth, colour, method, filtering, interlace)


def _grey(**kw) -> bytes:
    return crafted_png(
        GREY, ihdr=_ihdr(colour=0), idats=(zlib.compress(_rows(GREY[..., None])),), **kw
    )


def _indexed(plte: bytes | None, *, after: bytes | None = None) -> bytes:
    idx = (np.arange(64).reshape(8, 8) % 4).astype(np.uint8)
    before = () if plte is None else ((b"PLTE", plte),)
    tail = () if after is None else ((b"PLTE", after),)
    stream = zlib.compress(_rows(idx[..., None]))
    return crafted_png(RGB, ihdr=_ihdr(colour=3), before=before, after=tail, idats=(stream,))


def _fctl(seq: int, w: int = 8, h: int = 8, px: int = 0, py: int = 0) -> tuple[bytes, bytes]:
    return (b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, px, py, 1, 10, 0, 0))


def _pillow_apng(default_image: bool) -> bytes:
    frames = [Image.fromarray(RNG.integers(0, 256, (8, 8, 3), np.uint8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="PNG", save_all=True, append_images=frames[1:], default_image=default_image
    )
    return buf.getvalue()


ACTL = (b"acTL", struct.pack(">II", 2, 0))
BIG = zlib.compress(bytes(2 << 20))  # 2 MiB of text or profile, 2 KB compressed

# Refused: (bytes, a phrase of the cause). Each loads in Pillow or in libpng, not in both.
REFUSED = {
    "no IEND": (crafted_png(RGB, end=b""), "ends without its IEND chunk"),
    "IDAT cut": (crafted_png(RGB, end=b"")[:-4], "'IDAT' of length"),
    "Adler-32 missing": (crafted_png(RGB, idats=(STREAM[:-4],)), "end code and Adler-32"),
    "a row short": (crafted_png(RGB, idats=(zlib.compress(ROWS[:-25]),)), "ends after 175 bytes"),
    "header taller": (crafted_png(RGB, ihdr=_ihdr(h=9)), "expected 225 (9 rows"),
    "unknown critical chunk": (crafted_png(RGB, after=((b"ABCD", b""),)), "'ABCD' is critical"),
    "chunk type with a digit": (crafted_png(RGB, before=((b"ab1d", b""),)), "4 ASCII letters"),
    "IHDR twice": (crafted_png(RGB, after=((b"IHDR", _ihdr()),)), "second IHDR"),
    "IHDR not first": (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", b"a\0b") + crafted_png(RGB)[8:],
        "starts with chunk 'tEXt'",
    ),
    "IHDR 14 bytes": (crafted_png(RGB, ihdr=_ihdr() + b"\0"), "'IHDR' has length 14"),
    "compression method 1": (crafted_png(RGB, ihdr=_ihdr(method=1)), "compression method 1"),
    "filter method 1": (crafted_png(RGB, ihdr=_ihdr(filtering=1)), "filter method 1"),
    "bit depth 4 in RGB": (crafted_png(RGB, ihdr=_ihdr(depth=4)), "bit depth 4, colour type 2"),
    "width over libpng's limit": (
        crafted_png(RGB, ihdr=_ihdr(w=1_000_001)),
        "width is 1000001: expected 1 to 1,000,000",
    ),
    "IDAT length 2^31": (png_idat_length(RGB, 2**31), "at most 2^31-1"),
    "indexed without PLTE": (_indexed(None), "no PLTE chunk before IDAT"),
    "indexed PLTE of 11 bytes": (_indexed(bytes(11)), "'PLTE' has length 11"),
    "PLTE twice": (_indexed(bytes(12), after=bytes(12)), "second PLTE"),
    "empty PLTE in RGB": (crafted_png(RGB, before=((b"PLTE", b""),)), "'PLTE' has length 0"),
    "tRNS 2 bytes in RGB": (crafted_png(RGB, before=((b"tRNS", b"\0\1"),)), "expected 6"),
    "tRNS 1 byte in grey": (_grey(before=((b"tRNS", b"\0"),)), "expected 2 for colour type 0"),
    "tRNS short after IDAT": (crafted_png(RGB, after=((b"tRNS", b""),)), "'tRNS' has length 0"),
    "gAMA 2 bytes": (crafted_png(RGB, before=((b"gAMA", b"\0\1"),)), "'gAMA' has length 2"),
    "cHRM 31 bytes": (crafted_png(RGB, after=((b"cHRM", bytes(31)),)), "'cHRM' has length 31"),
    "sRGB empty": (crafted_png(RGB, before=((b"sRGB", b""),)), "'sRGB' has length 0"),
    "pHYs 8 bytes": (crafted_png(RGB, before=((b"pHYs", bytes(8)),)), "'pHYs' has length 8"),
    "iCCP name only": (crafted_png(RGB, before=((b"iCCP", b"name\0"),)), "compression method:"),
    "iCCP name only, after IDAT": (
        crafted_png(RGB, after=((b"iCCP", b"name\0"),)),
        "ends before its compression method",
    ),
    "iCCP without NUL": (crafted_png(RGB, before=((b"iCCP", b"name"),)), "'iCCP' ends before"),
    "iCCP method 1": (crafted_png(RGB, before=((b"iCCP", b"n\0\1xx"),)), "compression method 1"),
    "zTXt method 1": (crafted_png(RGB, after=((b"zTXt", b"k\0\1xx"),)), "'zTXt' has compression"),
    "iCCP inflating past 1 MiB": (
        crafted_png(RGB, before=((b"iCCP", b"icc\0\0" + BIG),)),
        "'iCCP' inflates to over 1048576 bytes",
    ),
    "zTXt inflating past 1 MiB": (
        crafted_png(RGB, after=((b"zTXt", b"k\0\0" + BIG),)),
        "'zTXt' inflates to over",
    ),
    "iTXt inflating past 1 MiB": (
        crafted_png(RGB, before=((b"iTXt", b"k\0\1\0en\0k\0" + BIG),)),
        "'iTXt' inflates to over",
    ),
    "acTL 4 bytes": (crafted_png(RGB, before=((b"acTL", bytes(4)),)), "'acTL' has length 4"),
    "fcTL 20 bytes": (crafted_png(RGB, after=((b"fcTL", bytes(20)),)), "'fcTL' has length 20"),
    "fcTL numbered 1 first": (crafted_png(RGB, before=(_fctl(1),)), "sequence number 1: expe"),
    "fcTL frame outside": (crafted_png(RGB, after=(_fctl(0, px=1),)), "inside the 8x8 image"),
    "default frame smaller": (
        crafted_png(RGB, before=(ACTL, _fctl(0, w=4))),
        "expected the IHDR's 8x8 at (0, 0)",
    ),
    "fdAT without fcTL": (crafted_png(RGB, after=((b"fdAT", bytes(8)),)), "an fcTL first"),
    "fdAT before IDAT": (
        crafted_png(RGB, before=(_fctl(0), (b"fdAT", b"\0\0\0\1" + zlib.compress(_rows(~RGB))))),
        "'fdAT' comes before IDAT",
    ),
}

# Loaded by both, to the same pixels: no rule may refuse them.
LOADED = {
    "plain": crafted_png(RGB),
    "Adler-32 cut short in an IDAT of its own": png_adler_cut(RGB),
    "a row too many": crafted_png(RGB, idats=(zlib.compress(ROWS + ROWS[:25]),)),
    "data after the zlib stream": crafted_png(RGB, idats=(STREAM + b"\0" * 5,)),
    "IDATs apart": crafted_png(RGB, after=((b"tEXt", b"a\0b"), (b"IDAT", b""))),
    "empty IDAT first": crafted_png(RGB, idats=(b"", STREAM)),
    "IEND with data": crafted_png(RGB, end=_chunk(b"IEND", b"xx")),
    "chunks after IEND": crafted_png(RGB) + _chunk(b"ABCD", b"") + b"junk",
    "PLTE in RGB, 4 bytes": crafted_png(RGB, before=((b"PLTE", bytes(4)),)),
    "empty PLTE in grey": _grey(before=((b"PLTE", b""),)),
    "empty PLTE in RGB after IDAT": crafted_png(RGB, after=((b"PLTE", b""),)),
    "tRNS too long": crafted_png(RGB, before=((b"tRNS", bytes(8)),)),
    "gAMA too long": crafted_png(RGB, before=((b"gAMA", bytes(6)),)),
    "iCCP empty name": crafted_png(RGB, before=((b"iCCP", b"\0\0" + zlib.compress(b"x")),)),
    "iCCP bad zlib": crafted_png(RGB, before=((b"iCCP", b"name\0\0xx"),)),
    "zTXt without NUL": crafted_png(RGB, after=((b"zTXt", b"k"),)),
    "unknown ancillary chunk": crafted_png(RGB, before=((b"abCd", b"x"),)),
    "indexed with PLTE": _indexed(bytes(range(12))),
    "iCCP of 3 KB": crafted_png(
        RGB, before=((b"iCCP", b"icc\0\0" + zlib.compress(RNG.bytes(3000))),)
    ),
    "iTXt, compressed": crafted_png(
        RGB, after=((b"iTXt", b"k\0\1\0en\0k\0" + zlib.compress(b"t")),)
    ),
    "APNG by Pillow, the default image its first frame": _pillow_apng(False),
    "APNG by Pillow, the default image apart": _pillow_apng(True),
    # Pillow stops reading an animation at its next frame's fcTL; libpng warns only:
    "APNG, a short fcTL after IDAT": crafted_png(RGB, before=(ACTL,), after=((b"fcTL", b""),)),
    "APNG, a short tRNS after the next fcTL": crafted_png(
        RGB, before=(ACTL, _fctl(0)), after=(_fctl(1), (b"tRNS", b""))
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_each_rule_names_the_record_the_path_and_what_is_expected(tmp_path, name):
    data, phrase = REFUSED[name]
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(ImageLoadError) as err:
        load_image(tmp_path / "x.png", record_id=7)
    assert (err.value.record_id, err.value.path) == (7, str(tmp_path / "x.png"))
    assert phrase in err.value.cause
    assert err.value.cause.startswith(("image is corrupt: PNG ", "image is corrupt or trunc"))


@pytest.mark.parametrize("name", list(LOADED))
def test_what_both_decoders_load_passes(name):
    check_bytes(LOADED[name], "p", 1)
    assert decode_image(LOADED[name], channels=3).shape == (8, 8, 3)


def test_a_short_iccp_after_idat_is_named_even_without_check_bytes():
    """Pillow's iCCP reader raises IndexError on it: named, not a bare IndexError."""
    data, _ = REFUSED["iCCP name only, after IDAT"]
    with pytest.raises(ImageLoadError, match=r"record 3 \(p\.png\): .*IndexError"):
        decode_image(data, path="p.png", record_id=3)


def _valid(colour: int, depth: int, interlace: int, h: int, w: int) -> bytes:
    """A valid PNG of random samples, filter 0, pass by pass when interlaced."""
    passes = [(t, lf, dy, dx) for t, lf, dy, dx in _ADAM7] if interlace else [(0, 0, 1, 1)]
    rows = b""
    for t, lf, dy, dx in passes:
        ph, pw = -(-(h - t) // dy), -(-(w - lf) // dx)
        if ph > 0 and pw > 0:
            n = (pw * depth * _SAMPLES[colour] + 7) // 8
            rows += b"".join(b"\0" + RNG.bytes(n) for _ in range(ph))
    assert len(rows) == filtered_size(h, w, depth * _SAMPLES[colour], bool(interlace))
    plte = ((b"PLTE", bytes(range(256)) * 3),) if colour == 3 else ()
    ihdr = _ihdr(w, h, depth, colour, 0, 0, interlace)
    return crafted_png(RGB, ihdr=ihdr, before=plte, idats=(zlib.compress(rows),))


VALID = {
    f"colour {c} depth {d}{' Adam7' if i else ''} {h}x{w}": (c, d, i, h, w)
    for c, depths in _DEPTHS.items()
    for d in depths
    for i in (0, 1)
    for h, w in ((1, 1), (3, 5), (9, 11))
}


def test_valid_pngs_of_every_colour_type_depth_and_interlace_pass():
    for name, args in VALID.items():
        data = _valid(*args)
        check_bytes(data, name, 1)
        decode_image(data, channels=3, path=name)  # Pillow, then the stream check


# --------------------------------------------------------------------------- against libpng


def _outcome(data: bytes, decoder: str) -> tuple[str, bytes | str]:
    """("ok", pixels) or ("error", why): the torch path's or tf.io's, check_bytes first."""
    try:
        check_bytes(data, "p", 1)
        if decoder == "tf":
            import tensorflow as tf

            try:
                return ("ok", tf.io.decode_png(data, channels=3).numpy().tobytes())
            except tf.errors.InvalidArgumentError:
                return ("error", "TensorFlow could not decode it")
        pixels = decode_into(data, channels=3, size=None, out=None, path="p", record_id=1)
        return ("ok", as_array(*pixels).tobytes())
    except ImageLoadError as e:
        return ("error", e.cause)


@pytest.mark.tf
def test_rules_refuse_only_what_pillow_or_libpng_refuses(monkeypatch):
    import tensorflow as tf

    def raw_tf(data: bytes) -> bytes | None:
        try:
            return tf.io.decode_png(data, channels=3).numpy().tobytes()
        except tf.errors.InvalidArgumentError:
            return None

    def raw_pillow(data: bytes) -> bytes | None:
        with monkeypatch.context() as m:
            m.setattr(decode, "check_stream", lambda *a: None)
            try:
                return decode_image(data, channels=3).tobytes()
            except ImageLoadError:
                return None

    for name, (data, _) in REFUSED.items():
        pil, lib = raw_pillow(data), raw_tf(data)
        assert pil is None or lib is None or pil != lib, f"{name}: both load it alike"
    for name, data in LOADED.items():
        assert raw_pillow(data) == raw_tf(data) is not None, name
    for name, args in VALID.items():
        assert raw_tf(_valid(*args)) is not None, name


def _fuzzed_stream(rng: np.random.Generator) -> bytes:
    """An RGB PNG whose zlib stream is cut, padded or corrupted, and split into IDATs."""
    h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    rows = b"".join(b"\0" + rng.integers(0, 4, 3 * w, np.uint8).tobytes() for _ in range(h))
    if rng.random() < 0.3:
        rows = rows[: -int(rng.integers(1, 3 * w + 2))] if rng.random() < 0.5 else rows + rows
    stream = zlib.compress(rows, int(rng.choice([0, 1, 9])))
    r = rng.random()
    if r < 0.5:
        stream = stream[: -int(rng.integers(1, 8))]
    elif r < 0.6:
        stream = stream[:-1] + bytes([stream[-1] ^ 1])
    cuts = sorted(int(x) for x in rng.integers(0, len(stream) + 1, int(rng.integers(0, 4))))
    idats = tuple(stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True))
    return crafted_png(RGB, ihdr=_ihdr(w=w, h=h), idats=idats)


@pytest.mark.tf
def test_the_stream_check_agrees_with_libpng_on_fuzzed_streams():
    """check_stream models libpng's zlib checks (NOTE [png rules]); both outcomes occur."""
    rng = np.random.default_rng(11)
    seen = set()
    for k in range(300):
        data = _fuzzed_stream(rng)
        torch_side, tf_side = _outcome(data, "torch"), _outcome(data, "tf")
        assert torch_side[0] == tf_side[0], (k, torch_side[1] if torch_side[0] == "error" else "")
        if torch_side[0] == "ok":
            assert torch_side == tf_side, k
        seen.add(torch_side[0])
    assert seen == {"ok", "error"}
