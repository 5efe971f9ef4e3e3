"""FHIR R4 (4.0.1) structures: validation against the official definitions. No IO."""
