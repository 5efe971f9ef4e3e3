"""HL7 v2 messages: read, map to a FHIR transaction, acknowledge."""
