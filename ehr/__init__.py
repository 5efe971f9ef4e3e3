"""FHIR-native reference EHR backend."""

__version__ = "0.1.0"
