"""FHIR R4 search, the pure part: parameter definitions compiled from the official package, the
values a resource is indexed under, and parsed queries. No IO; the store does the SQL."""
