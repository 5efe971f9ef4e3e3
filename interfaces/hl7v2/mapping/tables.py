"""v2 code tables and their FHIR counterparts, as data. Sources: the HL7 v2-to-FHIR IG concept maps
(build.fhir.org/ig/HL7/v2-to-fhir, "Table HL7nnnn to ..."); where the IG leaves a code unmapped the
choice made here is marked ``# not in the IG``."""

from __future__ import annotations

V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
V3_NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"
LOCAL_CODE_SYSTEM = "urn:ehr:hl7v2:codesystem:"

# Table 0001 administrative sex -> Patient.gender
SEX = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}

# Table 0396 coding system names (CWE-3, CWE-6) -> FHIR code system URIs
CODING_SYSTEMS = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNM": "http://snomed.info/sct", "SNOMED": "http://snomed.info/sct",
    "UCUM": UCUM, "ANS+": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10", "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "C4": "http://www.ama-assn.org/go/cpt", "CPT4": "http://www.ama-assn.org/go/cpt",
    "CVX": "http://hl7.org/fhir/sid/cvx", "NDC": "http://hl7.org/fhir/sid/ndc",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm", "UMLS": "http://www.nlm.nih.gov/research/umls",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238", "ISO3166_1": "urn:iso:std:iso:3166",
}

# Table 0078 abnormal flags -> v3 ObservationInterpretation (same codes; HM, AC, OBX, QCF, TOX are inactive)
INTERPRETATION = frozenset({
    "<", ">", "A", "AA", "B", "CAR", "D", "DET", "E", "EX", "EXP", "H", "HH", "HU", "I", "IE", "IND", "L",
    "LL", "LU", "MS", "N", "NCL", "ND", "NEG", "NR", "NS", "POS", "R", "RR", "S", "SDD", "SYN-R", "SYN-S",
    "U", "UNE", "VS", "W", "WR",
})

# Table 0085 observation result status -> Observation.status
OBSERVATION_STATUS = {
    "A": "amended", "C": "corrected", "D": "entered-in-error", "F": "final", "P": "preliminary",
    "W": "entered-in-error", "X": "cancelled",
    "B": "amended", "I": "registered", "N": "cancelled", "O": "registered", "R": "preliminary",  # not in the IG
    "S": "preliminary", "U": "final", "V": "final",  # not in the IG
}

# Table 0123 result status -> DiagnosticReport.status (Y and Z have no mapping: an error, as the IG says)
REPORT_STATUS = {
    "O": "registered", "I": "registered", "S": "registered", "P": "preliminary", "C": "corrected",
    "R": "partial", "F": "final", "X": "cancelled",
    "A": "partial", "M": "corrected", "N": "registered",  # not in the IG
}

# Table 0004 patient class -> Encounter.class (system, code, display)
PATIENT_CLASS = {
    "E": (V3_ACT_CODE, "EMER", "emergency"), "I": (V3_ACT_CODE, "IMP", "inpatient encounter"),
    "O": (V3_ACT_CODE, "AMB", "ambulatory"), "P": (V3_ACT_CODE, "PRENC", "pre-admission"),
    "R": (V2 + "0004", "R", "Recurring patient"), "B": (V2 + "0004", "B", "Obstetrics"),
    "C": (V2 + "0004", "C", "Commercial Account"), "N": (V2 + "0004", "N", "Not Applicable"),
    "U": (V2 + "0004", "U", "Unknown"),
}
UNKNOWN_CLASS = (V3_NULL_FLAVOR, "UNK", "unknown")  # PV1-2 empty; Encounter.class is 1..1 (not in the IG)

# Table 0003 event type -> Encounter.status (IG: A01 in-progress, A04 planned)
ENCOUNTER_STATUS = {"A01": "in-progress", "A04": "planned"}

# Table 0203 identifier type: codes kept as a v2-0203 coding; others go to type.text
IDENTIFIER_TYPES = frozenset({
    "AM", "AN", "BA", "BC", "BR", "DI", "DL", "DN", "DR", "EI", "EN", "FI", "FILL", "GI", "GN", "HC", "JHN",
    "LN", "LR", "MA", "MB", "MC", "MCN", "MD", "MI", "MR", "MRT", "NE", "NH", "NI", "NII", "NIIP", "NPI",
    "OD", "PEN", "PI", "PLAC", "PN", "PNT", "PPN", "PRC", "PRN", "PT", "RI", "RN", "RPH", "RR", "SL", "SN",
    "SR", "SS", "TAX", "TN", "U", "UPIN", "VN", "VS", "WC", "WCN", "XX",
})

# Table 0002 marital status -> v3 MaritalStatus
MARITAL = {"A": "A", "D": "D", "I": "I", "L": "L", "M": "M", "P": "P", "S": "S", "T": "T", "W": "W", "U": "UNK"}

# Table 0200 name type -> HumanName.use
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "S": "anonymous", "T": "temp",
            "TEMP": "temp", "BAD": "old", "NAV": "old", "R": "official", "C": "official"}

# Table 0190 address type -> Address.use / Address.type
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "P": "home"}
ADDRESS_TYPE = {"M": "postal", "SH": "postal"}

# Tables 0201 telecom use and 0202 equipment type -> ContactPoint.use / ContactPoint.system
TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "temp", "WPN": "work", "EMR": "temp"}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "Internet": "email",
                  "X.400": "email", "MD": "other", "TDD": "other", "TTY": "other", "SAT": "phone"}
EMAIL_EQUIPMENT = frozenset({"Internet", "X.400"})
