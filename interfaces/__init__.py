"""Ways in other than the FHIR REST API. Each reaches ePHI only through ``ehr.store`` with an
``AccessContext`` of its own (DESIGN.md, invariant 1)."""
