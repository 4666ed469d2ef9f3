"""Fuzz targets (hypothesis) for the three decoders that read bytes from outside:
the frame decoder and request parser of the wire protocol, the message parser (both
JSON forms), and the log decoder (scan and recovery of arbitrary and mutated logs).

Each is held to: never an exception outside its documented error type, never a crash,
and the decoder's invariant (frames come back as sent in any chunking; a damaged log
keeps exactly its valid prefix). 200 examples per target in CI; ``QSSH_NIGHTLY=1`` runs
20 000, ``QSSH_FUZZ_EXAMPLES=N`` any number (``--hypothesis-show-statistics`` prints
the counts).
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.errors import InvalidMessage, LogCorrupt
from sidecar.messages import QueueMessage
from sidecar.wal import FILE_HEADER_SIZE, WriteAheadLog, encode_frame, file_header, replay, scan
from transport.protocol import (
    FrameDecoder,
    FrameTooLarge,
    ProtocolError,
    Request,
    encode_wire_frame,
    parse_reply,
    parse_request,
)

NIGHTLY = os.environ.get("QSSH_NIGHTLY") == "1"
pytestmark = pytest.mark.timeout(7200 if NIGHTLY else 300)
EXAMPLES = int(os.environ.get("QSSH_FUZZ_EXAMPLES") or (20_000 if NIGHTLY else 200))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=40,
)


def orjson_safe(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False  # e.g. an integer over 64 bits: not JSON orjson writes
    return True


# ---- the wire protocol ----------------------------------------------------------------


@FUZZ
@given(stream=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_frame_decoder_on_arbitrary_bytes(stream: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(1024)
    pieces = [
        stream[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=False)
    ]
    broken = False
    for piece in pieces:
        try:
            frames = decoder.feed(piece)
        except FrameTooLarge:
            broken = True
            continue
        assert not broken, "a broken decoder must keep refusing"
        assert all(len(f) <= 1024 for f in frames)
        for body in frames:
            for parse in (parse_request, parse_reply):
                with contextlib.suppress(ProtocolError):
                    parse(body)
        assert decoder.pending_bytes <= 1024 + 4


@FUZZ
@given(
    bodies=st.lists(json_values.filter(orjson_safe), max_size=12),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
)
def test_frames_come_back_as_sent_in_any_chunking(bodies: list[Any], cuts: list[int]) -> None:
    stream = b"".join(encode_wire_frame(b) for b in bodies)
    decoder = FrameDecoder(1 << 20)
    cuts = sorted(c % (len(stream) + 1) for c in cuts)
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=False):
        out += decoder.feed(stream[a:b])
    assert [orjson.loads(f) for f in out] == bodies
    assert decoder.pending_bytes == 0


@FUZZ
@given(length=st.integers(1025, 2**32 - 1), tail=st.binary(max_size=64))
def test_an_oversized_length_prefix_costs_nothing(length: int, tail: bytes) -> None:
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge):
        decoder.feed(struct.pack(">I", length) + tail)
    assert decoder.pending_bytes == 0
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"more")


@FUZZ
@given(obj=json_values.filter(orjson_safe))
def test_parse_request_on_arbitrary_json(obj: Any) -> None:
    try:
        request = parse_request(orjson.dumps(obj))
    except ProtocolError:
        return
    assert isinstance(request, Request)
    assert isinstance(request.params, dict)


# ---- the message parser ---------------------------------------------------------------

KINDS = [
    "block_import",
    "vote",
    "transaction",
    "entropy_share",
    "gossip",
    "peer_discovery",
    "telemetry",
]
SERDE = ["BlockImport", "Vote", "Transaction", "EntropyShare", "Gossip"]
FIELDS = [
    "block_hash",
    "block_number",
    "timestamp",
    "validator",
    "signature",
    "tx_hash",
    "tx_data",
    "value_usd",
    "device_id",
    "entropy",
    "qber_percent",
    "topic",
    "data",
    "peer_id",
    "addresses",
    "name",
    "value",
    "labels",
]
field_maps = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
canonical_like = st.builds(lambda k, f: {"kind": k, **f}, st.sampled_from(KINDS), field_maps)
serde_like = st.builds(lambda k, f: {k: f}, st.sampled_from(SERDE), field_maps)
messages = canonical_like | serde_like | json_values


def check_message(raw: Any) -> None:
    try:
        msg = QueueMessage.from_json(raw)
    except InvalidMessage:
        return
    # what was accepted round-trips through both forms
    assert QueueMessage.from_json(msg.to_json()) == msg
    assert QueueMessage.from_json(msg.to_serde()) == msg or msg.kind.value in (
        "peer_discovery",
        "telemetry",
    )


@FUZZ
@given(raw=messages)
def test_message_parser_on_objects(raw: Any) -> None:
    check_message(raw)


@FUZZ
@given(raw=messages.filter(orjson_safe), form=st.sampled_from(["str", "bytes"]))
def test_message_parser_on_text(raw: Any, form: str) -> None:
    encoded = orjson.dumps(raw)
    check_message(encoded if form == "bytes" else encoded.decode())


@FUZZ
@given(raw=st.binary(max_size=512))
def test_message_parser_on_arbitrary_bytes(raw: bytes) -> None:
    check_message(raw)


# ---- the log decoder ------------------------------------------------------------------

records = st.lists(
    st.one_of(
        st.tuples(st.just("C"), st.integers(1, 2**40)).map(list),
        st.tuples(st.just("R"), st.integers(1, 2**40)).map(list),
    ),
    min_size=1,
    max_size=5,
)


def build_log(frames: list[list[list[Any]]]) -> tuple[bytes, list[int]]:
    """A log of these frames, and the offset where each frame starts (+ the end)."""
    data = file_header()
    offsets = []
    for frame in frames:
        offsets.append(len(data))
        data += encode_frame([orjson.dumps(r) for r in frame])
    offsets.append(len(data))
    return data, offsets


@FUZZ
@given(
    frames=st.lists(records, min_size=1, max_size=8),
    where=st.integers(0, 1 << 20),
    xor=st.integers(1, 255),
)
def test_a_flipped_byte_keeps_exactly_the_frames_before_it(
    frames: list[list[list[Any]]], where: int, xor: int
) -> None:
    data, offsets = build_log(frames)
    pos = FILE_HEADER_SIZE + where % (len(data) - FILE_HEADER_SIZE)
    damaged = bytearray(data)
    damaged[pos] ^= xor
    hit = max(i for i, start in enumerate(offsets[:-1]) if start <= pos)
    result = scan(bytes(damaged))
    assert result.records == [r for f in frames[:hit] for r in f]
    assert result.valid_end == offsets[hit]
    if hit == len(frames) - 1:
        assert result.torn_tail
    else:
        assert result.corrupt
        assert result.next_valid_offset is not None
        assert result.next_valid_offset >= offsets[hit]
        salvaged = scan(bytes(damaged), salvage=True)
        assert salvaged.records == [r for i, f in enumerate(frames) if i != hit for r in f]


@FUZZ
@given(frames=st.lists(records, min_size=1, max_size=8), cut=st.integers(0, 1 << 20))
def test_a_torn_tail_keeps_every_whole_frame(frames: list[list[list[Any]]], cut: int) -> None:
    data, offsets = build_log(frames)
    end = FILE_HEADER_SIZE + cut % (len(data) - FILE_HEADER_SIZE + 1)
    result = scan(data[:end])
    whole = max(i for i, o in enumerate(offsets) if o <= end)
    assert result.records == [r for f in frames[:whole] for r in f]
    assert result.valid_end == offsets[whole]
    assert result.clean == (end == offsets[whole])
    assert not result.corrupt


@FUZZ
@given(
    frames=st.lists(records, max_size=4),
    junk=st.binary(max_size=512),
    keep_header=st.booleans(),
    salvage=st.booleans(),
)
def test_opening_an_arbitrary_log_file(
    tmp_path_factory: pytest.TempPathFactory,
    frames: list[list[list[Any]]],
    junk: bytes,
    keep_header: bool,
    salvage: bool,
) -> None:
    data, _ = build_log(frames)
    content = (data if keep_header else b"") + junk
    path = Path(tmp_path_factory.mktemp("wal")) / "fuzz.wal"
    path.write_bytes(content)
    try:
        wal, recovery = WriteAheadLog.open(str(path), salvage=salvage)
    except LogCorrupt:
        assert not salvage or not keep_header
        return
    wal.close()
    if keep_header:
        # the valid prefix is never lost
        assert recovery.records >= sum(len(f) for f in frames)


@FUZZ
@given(batch=st.lists(st.lists(json_values, min_size=1, max_size=6), max_size=6))
def test_replaying_strange_records_in_a_valid_frame(batch: list[list[Any]]) -> None:
    """Records a newer version (or a bug) might write: LogCorrupt, never a crash."""
    with contextlib.suppress(LogCorrupt):
        replay(batch)
