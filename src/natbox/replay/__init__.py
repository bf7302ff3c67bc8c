"""Replaying captures and scenarios through an engine: the driver (`driver`) and what it writes (`report`)."""

from natbox.replay.driver import InputPacket, PacketSink, Replayer, Source, merge_inputs

__all__ = ["InputPacket", "PacketSink", "Replayer", "Source", "merge_inputs"]
