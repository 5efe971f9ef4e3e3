"""Audit controls (45 CFR 164.312(b)): one AuditEvent per interaction, in a tamper-evident log."""
