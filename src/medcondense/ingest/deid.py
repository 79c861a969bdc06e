"""De-identification: keyed hashes for patients, series and (optionally) paths.

Keys are HMAC-SHA256 with a site secret that never leaves the site: ``$MEDCONDENSE_SALT`` or
the salt file ``$XDG_CONFIG_HOME/medcondense/salt`` (``~/.config/medcondense/salt``), created
with a random secret and 0600 permissions on first use. The secret is never stored in outputs.
No DICOM tag value is copied into an output: only pixel data and numeric geometry.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

SALT_ENV = "MEDCONDENSE_SALT"
KEY_CHARS = 24
# Modality is a coded string from a small vocabulary; anything else is not copied.
_MODALITY = re.compile(r"^[A-Z]{2,4}$")


def salt_path() -> Path:
    """Where the site secret lives when ``$MEDCONDENSE_SALT`` is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medcondense" / "salt"


def site_secret() -> bytes:
    """The site secret: ``$MEDCONDENSE_SALT``, else the salt file (created on first use, mode 0600)."""
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    path = salt_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            log.info("created a new site secret in %s (keep it: patient keys depend on it)", path)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def keyed_hash(value: str, kind: str, secret: bytes) -> str:
    """HMAC-SHA256 of ``kind:value`` under ``secret``, shortened to :data:`KEY_CHARS` hex digits."""
    mac = hmac.new(secret, f"{kind}:{value}".encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()[:KEY_CHARS]


def safe_modality(value: object) -> str:
    """The Modality code if it looks like a DICOM defined term (``CT``, ``MR``), else ``OT``."""
    text = str(value or "").strip().upper()
    return text if _MODALITY.match(text) else "OT"


def relative_source(path: str | Path, root: str | Path) -> str:
    """``path`` relative to its input root (POSIX separators); the file name when root is the file."""
    root_is_file, root_text = _root_form(str(root))
    text = str(path)
    rest = text[len(root_text) + 1:]
    # the common case, a discovered file's path under its root, cut as text (pathlib's parse of
    # both paths and a stat of the root cost ~20 us per image); the same result as below when
    # the rest has no empty or "." component
    if (not root_is_file and os.sep == "/" and text.startswith(root_text + "/") and rest
            and "//" not in rest and not rest.endswith("/") and "/./" not in f"/{rest}/"):
        return rest
    path, root = Path(path), Path(root)
    if root_is_file or path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


@lru_cache(maxsize=64)
def _root_form(root: str) -> tuple[bool, str]:
    """(is a file, its text as pathlib spells it) of an input root: once per root, not per image."""
    return Path(root).is_file(), str(Path(root))


#: Attributes of DICOM PS3.15 Annex E's Basic Application Level Confidentiality Profile
#: (Table E.1-1) that identify a person, a place or an event: never used as class names unless
#: the user says --allow-identifying-label-tag. (UIDs are left out: they identify nothing readable
#: but are refused too, as every one of them is unique per patient or study.)
IDENTIFYING_KEYWORDS = frozenset("""
AccessionNumber AcquisitionComments AcquisitionContextSequence AcquisitionDate AcquisitionDateTime
AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription AcquisitionTime ActualHumanPerformersSequence
AdditionalPatientHistory AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription
AdmittingTime Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
ConfidentialityConstraintOnPatientDataDescription ContentCreatorName ContentCreatorIdentificationCodeSequence
ContentDate ContentTime ContributionDateTime ContributionDescription CountryOfResidence CurrentPatientLocation
CurveDate CurveTime CustodialOrganizationSequence DataSetTrailingPadding DerivationDescription DetectorID
DeviceSerialNumber DeviceUID DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress
DistributionName DoseReferenceUID EthnicGroup FailedSOPInstanceUIDList FiducialUID FillerOrderNumberImagingServiceRequest
FrameComments FrameOfReferenceUID GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName
HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
ImagingServiceRequestComments Impressions InstanceCreationDate InstanceCreationTime InstanceCreatorUID
InstitutionAddress InstitutionCodeSequence InstitutionName InstitutionalDepartmentName InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
InterpretationDiagnosisDescription InterpretationIDIssuer InterpretationRecorder InterpretationText
InterpretationTranscriber IrradiationEventUID IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID
LastMenstrualDate MAC MediaStorageSOPInstanceUID MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence
ModifiedImageDescription ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy
NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName OrderCallbackPhoneNumber
OrderEnteredBy OrderEntererLocation OriginalAttributesSequence OtherPatientIDs OtherPatientIDsSequence
OtherPatientNames OverlayComments OverlayData OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge
PatientBirthDate PatientBirthName PatientBirthTime PatientComments PatientID PatientInstitutionResidence
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName PatientPrimaryLanguageCodeSequence
PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientSex PatientSexNeutered PatientSize
PatientState PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements PatientWeight
PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndTime
PerformedProcedureStepID PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence
PersonName PersonTelephoneNumbers PersonTelecomInformation PhysicianApprovingInterpretation
PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
PlacerOrderNumberImagingServiceRequest PlateID PreMedication PregnancyStatus ProtocolName ReasonForStudy
ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReferencedImageSequence
ReferencedPatientAliasSequence ReferencedPatientPhotoSequence ReferencedPatientSequence
ReferencedPerformedProcedureStepSequence ReferencedSOPInstanceUID ReferencedStudySequence
ReferringPhysicianAddress ReferringPhysicianIdentificationSequence ReferringPhysicianName
ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence RequestedContrastAgent
RequestedProcedureComments RequestedProcedureDescription RequestedProcedureID RequestedProcedureLocation
RequestingPhysician RequestingService RespirationSynchronizationSignal ResponsibleOrganization ResponsiblePerson
ResultsComments ResultsDistributionListSequence ResultsIDIssuer ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
ScheduledProcedureStepDescription ScheduledProcedureStepLocation ScheduledProcedureStepStartDate
ScheduledProcedureStepStartTime ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence
ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
SeriesDate SeriesDescription SeriesInstanceUID SeriesTime ServiceEpisodeDescription ServiceEpisodeID
SmokingStatus SOPInstanceUID SourceImageSequence SpecialNeeds StationName StorageMediaFileSetUID StudyComments
StudyDate StudyDescription StudyID StudyIDIssuer StudyInstanceUID StudyTime SynchronizationFrameOfReferenceUID
TextComments TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle
TransactionUID UID VerifyingObserverIdentificationCodeSequence VerifyingObserverName VerifyingObserverSequence
VerifyingOrganization VisitComments
""".split())


def check_label_tag(keyword: str | None, *, allow_identifying: bool = False) -> None:
    """Refuse ``--label-tag`` on an attribute that identifies a person, place or event
    (PS3.15 basic profile), and on names that are no DICOM keyword (a typo would label nothing)."""
    from medcondense.errors import ConfigError

    if not keyword:
        return
    from pydicom.datadict import keyword_dict

    if keyword not in keyword_dict:
        raise ConfigError(f"--label-tag {keyword!r} is not a DICOM keyword (e.g. BodyPartExamined)")
    if keyword in IDENTIFYING_KEYWORDS and not allow_identifying:
        raise ConfigError(
            f"--label-tag {keyword} is an identifying attribute (DICOM PS3.15 basic profile): its "
            "values would become class names in every output",
            hint="pass --allow-identifying-label-tag if the values are known to be safe",
        )
