"""Telemetry: one event vocabulary, a bus, and the sinks that read it."""

from telemetry.bus import Bus, Sink, Tracer
from telemetry.events import Event, Level, Name, Role, format_address
from telemetry.jsonlog import LogSink, event_to_dict, format_text
from telemetry.metrics import Metrics
from telemetry.setup import Telemetry, add_telemetry_arguments
from telemetry.timeline import Timeline

__all__ = [
    "Bus",
    "Event",
    "Level",
    "LogSink",
    "Metrics",
    "Name",
    "Role",
    "Sink",
    "Telemetry",
    "Timeline",
    "Tracer",
    "add_telemetry_arguments",
    "event_to_dict",
    "format_address",
    "format_text",
]
