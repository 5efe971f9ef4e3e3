"""MLLP (HL7 v2 Minimal Lower Layer Protocol, Release 2) over TLS: framing and an asyncio server."""
