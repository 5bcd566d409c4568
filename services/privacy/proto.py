"""Protobuf <-> domain conversions shared by the privacy service's APIs: channels, subject
ids and times."""

from __future__ import annotations

import re
from datetime import datetime

from google.protobuf import timestamp_pb2
from membership.privacy.v1 import consent_pb2 as consent_pb

from services.privacy.domain.consent import Channel
from services.runtime.errors import ViolationCollector

# as caller tokens bound their subjects; FieldCryptoService and AuditService take the same
SUBJECT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SUBJECT_ID_RULE = "1-64 characters of A-Z a-z 0-9 _ . : -"

CHANNELS_BY_ENUM: dict[consent_pb.Channel.ValueType, Channel] = {
    consent_pb.CHANNEL_APP: Channel.APP,
    consent_pb.CHANNEL_WEB: Channel.WEB,
    consent_pb.CHANNEL_COUNTER: Channel.COUNTER,
    consent_pb.CHANNEL_PHONE: Channel.PHONE,
}
CHANNEL_ENUMS = {name: value for value, name in CHANNELS_BY_ENUM.items()}


def channel_of(v: ViolationCollector, value: consent_pb.Channel.ValueType) -> Channel | None:
    channel = CHANNELS_BY_ENUM.get(value)
    if channel is None:
        v.add("channel", "required: one of APP, WEB, COUNTER, PHONE")
    return channel


def channel_enum(channel: Channel | None) -> consent_pb.Channel.ValueType:
    """UNSPECIFIED for None (privacy's own requests, consent never given)."""
    if channel is None:
        return consent_pb.CHANNEL_UNSPECIFIED
    return CHANNEL_ENUMS[channel]


def set_time(target: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)
