"""DICOMweb (a PACS or VNA) as an ingest input: QIDO-RS to list, WADO-RS to read.

An input starting with ``http://`` or ``https://`` is a DICOMweb root. The studies read are the
ones chosen (``--study``, ``--query``, or the rows of a study/series/accession/patient-keyed labels
CSV; never the whole archive). QIDO-RS lists their series and instances (the listing's hash is
part of the run key, so an unchanged listing makes a rerun a no-op); WADO-RS gives each series'
metadata, from which the usual :class:`~medcondense.ingest.dicom.Header` objects are built
(grouping, ordering and rejects as for files), and then the instances, in bounded batches
(:data:`BATCH` at a time, :data:`CONCURRENT_REQUESTS` requests in flight), asking for the stored
transfer syntax (``transfer-syntax=*``); they are decoded like files (in reader processes with
``--workers``). Instances live in memory only, unless ``--cache DIR`` keeps them for a resumed run.

Credentials come only from the environment (:data:`TOKEN_ENV`, or :data:`USER_ENV` and
:data:`PASSWORD_ENV`) or ``~/.netrc``; never from options, and no message names them. Errors
name the host, never the URL path (it holds UIDs) or a secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from medcondense.errors import ConfigError, NoUsableInputError
from medcondense.ingest.discover import URL_SCHEMES as SCHEMES, is_url  # noqa: F401 - this module's API

log = logging.getLogger(__name__)

TOKEN_ENV = "MEDCONDENSE_DICOMWEB_TOKEN"
USER_ENV = "MEDCONDENSE_DICOMWEB_USER"
PASSWORD_ENV = "MEDCONDENSE_DICOMWEB_PASSWORD"
PACS_HINT = 'pip install "medcondense[pacs]"'
AUTH_HINT = f"set {TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}, or a ~/.netrc entry for the host"
# WADO-RS: the instance as stored (Orthanc and others transcode to uncompressed otherwise)
ANY_SYNTAX = (("application/dicom", "*"),)
UNCOMPRESSED = (("application/dicom", "1.2.840.10008.1.2.1"),)
TIMEOUT_S = 60.0
RETRY_ATTEMPTS = 3
# WADO-RS retrieval: instances held in memory at once, and requests in flight at once
BATCH = 16
CONCURRENT_REQUESTS = 4
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def host_of(url: str) -> str:
    """``host[:port]`` of a URL, without any user info: what messages name."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def check_url(url: str) -> str:
    """The URL without a trailing slash; ConfigError for credentials in it (they would end up in
    shell histories and process lists) or a query part."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ConfigError(f"{parts.scheme}://{host_of(url)}: credentials in the URL are not accepted",
                          hint=AUTH_HINT)
    if not parts.hostname:
        raise ConfigError(f"{url!r} is not a DICOMweb URL (no host)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{parts.scheme}://{host_of(url)}: give the DICOMweb root without ?query; "
                          "choose studies with --study or --query")
    return url.rstrip("/")


# ------------------------------------------------------------------------------ client


def _requests():
    try:
        import dicomweb_client  # noqa: F401
        import requests
    except ImportError:
        raise ConfigError("DICOMweb inputs need the dicomweb-client package", hint=PACS_HINT) from None
    return requests


def _quiet_libraries() -> None:
    """dicomweb-client, urllib3 and retrying log request URLs (they hold UIDs): keep them out of stderr."""
    for name in ("dicomweb_client", "urllib3", "retrying"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False


def make_session(url: str):
    """A requests session with the credentials from the environment (else requests reads
    ``~/.netrc`` itself)."""
    requests = _requests()

    class Bearer(requests.auth.AuthBase):
        """``Authorization: Bearer``; as an auth object, requests drops it on cross-host redirects."""

        def __init__(self, token: str):
            self._token = token

        def __call__(self, request):
            request.headers["Authorization"] = f"Bearer {self._token}"
            return request

    session = requests.Session()
    token, user = os.environ.get(TOKEN_ENV), os.environ.get(USER_ENV)
    if token:
        session.auth = Bearer(token)
    elif user:
        session.auth = (user, os.environ.get(PASSWORD_ENV, ""))
    if (token or user) and urlsplit(url).scheme == "http" and urlsplit(url).hostname not in _LOCAL_HOSTS:
        log.warning("sending DICOMweb credentials to %s over plain http; use https", host_of(url))
    return session


_CLIENTS: dict[tuple[str, str, bool], Any] = {}


def client_for(url: str, *, pixels: bool = False):
    """One DICOMweb client per root URL, credentials, purpose and process (reader processes build
    their own; a change of credentials in the environment gets a new session).

    ``pixels``: the client that retrieves instances asks for them without HTTP compression
    (``Accept-Encoding: identity``): pixel data is often compressed already, and a server's gzip
    costs more than it saves on a hospital network (Orthanc: 0.25 s instead of 0.01 s for a
    512x512 CT slice on localhost). QIDO-RS and metadata JSON keep gzip.
    """
    secret = "\0".join(os.environ.get(n, "") for n in (TOKEN_ENV, USER_ENV, PASSWORD_ENV))
    key = (url, hashlib.sha256(secret.encode()).hexdigest(), pixels)
    if key not in _CLIENTS:
        _requests()
        _quiet_libraries()
        from dicomweb_client.api import DICOMwebClient

        session = make_session(url)
        if pixels:
            session.headers["Accept-Encoding"] = "identity"
        client = DICOMwebClient(url, session=session, timeout=TIMEOUT_S)
        # dicomweb-client retries failed connections and 429/408/503/504 with exponential waits:
        # three attempts, 0.4 s then 0.8 s apart (its default waits half a minute for a dead host)
        client.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=200)
        _CLIENTS[key] = client
    return _CLIENTS[key]


def _reason(exc: BaseException) -> tuple[str, bool]:
    """A short reason for a failed request and whether it concerns the whole server (exit 3).

    Never the exception text itself: it holds the URL path (UIDs) of the request.
    """
    import requests

    if isinstance(exc, requests.HTTPError):
        code = exc.response.status_code if exc.response is not None else 0
        if code in (401, 403):
            return f"refused access (HTTP {code})", True
        return f"answered HTTP {code}", False
    if type(exc).__name__ == "RetryError":  # dicomweb-client gave up retrying 408/429/503/504
        response = getattr(getattr(exc, "last_attempt", None), "value", None)
        code = getattr(response, "status_code", "?")
        return f"kept answering HTTP {code} ({RETRY_ATTEMPTS} attempts)", True
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (check the certificate, or REQUESTS_CA_BUNDLE)", True
    if isinstance(exc, (requests.Timeout,)):
        return f"no answer within {TIMEOUT_S:.0f} s", True
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Name or service not known" in text or "NameResolution" in text or "nodename" in text:
            return "cannot resolve the host name", True
        if "refused" in text.lower():
            return "connection refused", True
        return "cannot connect", True
    if isinstance(exc, requests.RequestException):
        return f"request failed ({type(exc).__name__})", True
    return f"answered something that is not DICOMweb ({type(exc).__name__})", True


@contextmanager
def talking_to(url: str) -> Iterator[None]:
    """Turn any failure of a request to ``url`` into NoUsableInputError naming the host."""
    try:
        yield
    except (ConfigError, NoUsableInputError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - requests, JSON and multipart errors alike
        reason, _ = _reason(exc)
        hint = AUTH_HINT if "refused access" in reason else None
        raise NoUsableInputError(f"the DICOMweb server {host_of(url)} {reason}", hint=hint) from None


# ------------------------------------------------------------------------------ choosing studies


def parse_query(query: str) -> dict[str, str]:
    """``Keyword=value&Keyword=value`` (QIDO-RS matching) -> a dict; ConfigError for bad keys."""
    from pydicom.datadict import tag_for_keyword

    pairs = parse_qsl(query or "", keep_blank_values=True, strict_parsing=False)
    if not pairs:
        raise ConfigError("--query: expected Keyword=value pairs joined by &, e.g. ModalitiesInStudy=CT")
    out: dict[str, str] = {}
    for key, value in pairs:
        is_tag = len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key)
        if not is_tag and tag_for_keyword(key) is None:
            raise ConfigError(f"--query: {key!r} is not a DICOM keyword (e.g. StudyDate, ModalitiesInStudy)")
        out[key] = value
    return out


def _uids(results: list[dict], tag: str) -> list[str]:
    out = []
    for item in results or []:
        value = (item.get(tag) or {}).get("Value") or []
        if value:
            out.append(str(value[0]))
    return out


@dataclass
class Selection:
    """The studies chosen on one server, and for a series-keyed sheet the series wanted."""

    studies: list[str]
    series: dict[str, set[str]] | None = None


def choose(client, url: str, *, studies: list[str], query: str | None, sheet) -> Selection:
    """The studies to read from one server: ``--study`` and ``--query`` (together: both), else the
    rows of an identity-keyed labels sheet. ConfigError when nothing says which studies."""
    with talking_to(url):
        if studies or query:
            chosen = dict.fromkeys(studies)  # an ordered set
            if query:
                found = client.search_for_studies(search_filters=parse_query(query), get_remaining=True)
                chosen.update(dict.fromkeys(_uids(found, STUDY_UID)))
            return Selection(list(chosen))
        key = getattr(sheet, "key", None)
        if key == "study_uid":
            return Selection(sheet.keys())
        if key == "series_uid":
            wanted: dict[str, set[str]] = {}
            for uid in sheet.keys():
                for item in client.search_for_series(search_filters={"SeriesInstanceUID": uid}) or []:
                    for study in _uids([item], STUDY_UID):
                        wanted.setdefault(study, set()).add(uid)
            return Selection(sorted(wanted), wanted)
        if key in ("accession", "patient_id"):
            keyword, tag = ("AccessionNumber", "00080050") if key == "accession" else ("PatientID", "00100020")
            chosen = {}
            for value in sheet.keys():
                found = client.search_for_studies(search_filters={keyword: value}, get_remaining=True)
                # QIDO matching treats * and ? as wildcards: keep exact matches only
                exact = [item for item in found or [] if _uids([item], tag) in ([], [value])]
                chosen.update(dict.fromkeys(_uids(exact, STUDY_UID)))
            return Selection(list(chosen))
    raise ConfigError(
        f"say which studies to read from {host_of(url)}: --study UID, --query 'Keyword=value&...', "
        "or --labels with a study_uid, series_uid, accession or patient_id column"
    )


# ------------------------------------------------------------------------------ listing


def _series_of(client, study: str) -> list[dict]:
    """QIDO-RS series of a study; an unknown study is an empty list (some servers answer 404)."""
    import requests

    try:
        return client.search_for_series(study, get_remaining=True) or []
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return []
        raise


@dataclass
class Listing:
    """What QIDO-RS listed: (root URL, study, series, instance) UIDs of every instance to read."""

    instances: list[tuple[str, str, str, str]] = field(default_factory=list)
    studies: int = 0

    def digest(self) -> str:
        """SHA-256 of the sorted listing (part of the run key: a changed listing is a new run)."""
        h = hashlib.sha256()
        for item in sorted(self.instances):
            h.update("|".join(item).encode() + b"\n")
        return h.hexdigest()


def list_instances(urls: list[str], *, studies: list[str], query: str | None, sheet,
                   advance: Callable[[], None] = lambda: None) -> Listing:
    """QIDO-RS: the instances of the chosen studies on every server.

    Raises
    ------
    NoUsableInputError
        A server unreachable or refusing access; a ``--study`` (or a study_uid row) on no server;
        no instance at all.
    ConfigError
        Nothing says which studies to read, a bad ``--query``, the pacs extra missing.
    """
    listing = Listing()
    wanted: dict[str, None] = {}  # ordered set
    found: set[str] = set()
    for url in urls:
        client = client_for(url)
        selection = choose(client, url, studies=studies, query=query, sheet=sheet)
        wanted.update(dict.fromkeys(selection.studies))
        with talking_to(url):
            for study in selection.studies:
                series = _uids(_series_of(client, study), SERIES_UID)
                if selection.series is not None:
                    series = [s for s in series if s in selection.series.get(study, set())]
                if series:
                    found.add(study)
                for uid in series:
                    sops = _uids(client.search_for_instances(study, uid, get_remaining=True), SOP_UID)
                    listing.instances += [(url, study, uid, sop) for sop in sops]
                advance()
    hosts = ", ".join(host_of(u) for u in urls)
    # the studies named one by one (--study, else a study_uid sheet) must exist; a --query or an
    # accession/patient row that finds nothing is for the sheet check to report
    by_sheet = not (studies or query) and getattr(sheet, "key", None) == "study_uid"
    named = set(studies) | (set(sheet.rows) if by_sheet else set())
    missing = [s for s in wanted if s in named and s not in found]
    if missing:
        # name the position or the sheet line, not the UID (it identifies a patient's study)
        if by_sheet:
            where = "the labels CSV's line(s) " + ", ".join(str(n) for s in missing for n, _ in sheet.rows[s])
        else:
            where = "--study number(s) " + ", ".join(str(studies.index(s) + 1) for s in missing)
        raise NoUsableInputError(f"{len(missing)} study(ies) not found on {hosts}: {where}")
    listing.studies = len(found)
    if not listing.instances:
        raise NoUsableInputError(f"no instances found on {hosts} for the {len(wanted)} chosen study(ies)")
    log.info("%d instance(s) in %d series of %d study(ies) on %s", len(listing.instances),
             len({i[2] for i in listing.instances}), listing.studies, hosts)
    return listing


# ------------------------------------------------------------------------------ headers and pixels


def locator(study: str, series: str, sop: str) -> str:
    """How an instance is named in the rejects report (UIDs, no host and no path)."""
    return f"studies/{study}/series/{series}/instances/{sop}"


def _without_bulk(item: dict) -> dict:
    """DICOM JSON without bulk-data references (pixel data is retrieved with the instance)."""
    return {tag: value for tag, value in item.items() if "BulkDataURI" not in (value or {})}


def read_headers(listing: Listing, *, label_tag: str | None, cache: str | None,
                 reject: Callable[[str, str], None], allow_burned_in: bool = False) -> list:
    """WADO-RS series metadata -> Headers whose ``source`` retrieves the instance on demand."""
    import pydicom

    from medcondense.ingest.dicom import Header, header_from_dataset

    by_series: dict[tuple[str, str, str], set[str]] = {}
    for url, study, series, sop in listing.instances:
        by_series.setdefault((url, study, series), set()).add(sop)
    headers: list[Header] = []
    for (url, study, series), sops in sorted(by_series.items()):
        try:
            items = client_for(url).retrieve_series_metadata(study, series)
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001
            reason, fatal = _reason(exc)
            if fatal:
                hint = AUTH_HINT if "refused access" in reason else None
                raise NoUsableInputError(f"the DICOMweb server {host_of(url)} {reason}", hint=hint) from None
            for sop in sorted(sops):
                reject(locator(study, series, sop), f"no series metadata: the server {reason}")
            continue
        seen = set()
        for item in items or []:
            sop = (_uids([item], SOP_UID) or [""])[0]
            if sop not in sops or sop in seen:
                continue  # stored after the listing: not part of this run
            seen.add(sop)
            where = locator(study, series, sop)
            try:
                ds = pydicom.Dataset.from_json(_without_bulk(item))
            except Exception as exc:  # noqa: BLE001
                reject(where, f"malformed DICOM JSON metadata ({type(exc).__name__})")
                continue
            header = header_from_dataset(ds, where, url, label_tag, need_pixels=False, allow_burned_in=allow_burned_in)
            if isinstance(header, str):
                reject(where, header)
                continue
            header.source = RemoteInstance(url, study, series, sop, cache)
            headers.append(header)
        for sop in sorted(sops - seen):
            reject(locator(study, series, sop), "listed by QIDO-RS but absent from the series metadata")
    return headers


@dataclass(frozen=True)
class RemoteInstance:
    """One instance on a DICOMweb server; ``load()`` retrieves it (or reads it from the cache).

    Picklable (no client or secret inside): reader processes retrieve with their own client.
    """

    url: str
    study: str
    series: str
    sop: str
    cache: str | None = None

    def cache_path(self) -> Path | None:
        if not self.cache:
            return None
        name = hashlib.sha256(f"{self.url}|{self.study}|{self.series}|{self.sop}".encode()).hexdigest()[:40]
        return Path(self.cache) / f"{name}.dcm"

    def load(self):
        """The instance as a pydicom Dataset in its stored transfer syntax.

        Raises
        ------
        DecodeError
            It cannot be retrieved (the reason names the host and the HTTP status).
        """
        import pydicom

        from medcondense.ingest.dicom import DecodeError

        cached = self.cache_path()
        if cached is not None and cached.is_file():
            try:
                return pydicom.dcmread(cached, force=True)
            except Exception:  # noqa: BLE001 - a damaged cache entry is fetched again
                log.debug("re-fetching a damaged cache entry")
        try:
            ds = self._retrieve()
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"cannot retrieve it: the DICOMweb server {host_of(self.url)} {_reason(exc)[0]}") from None
        if cached is not None:
            write_cache(ds, cached)
        return ds


    def _retrieve(self):
        """WADO-RS in the stored syntax; a server that refuses ``transfer-syntax=*`` (HTTP 400 or
        406) is asked again for Explicit VR Little Endian, which every server must offer."""
        import requests

        client = client_for(self.url, pixels=True)
        try:
            return client.retrieve_instance(self.study, self.series, self.sop, media_types=ANY_SYNTAX)
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code not in (400, 406):
                raise
        log.debug("the server refused transfer-syntax=*; retrieving Explicit VR Little Endian")
        return client.retrieve_instance(self.study, self.series, self.sop, media_types=UNCOMPRESSED)


def write_cache(ds, path: Path) -> None:
    """Write one retrieved instance into the cache through the safe-write helper (a cut-off run
    leaves no half file); folder 0700 and file 0600, as it holds patient data."""
    from medcondense.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
        os.chmod(tmp, 0o600)


@dataclass(frozen=True)
class Retrieved:
    """An instance already retrieved (or the reason it could not be): what a reader gets."""

    dataset: Any = None
    reason: str | None = None

    def load(self):
        from medcondense.ingest.dicom import DecodeError

        if self.reason is not None:
            raise DecodeError(self.reason)
        return self.dataset


def _retrieve(source: Any) -> Any:
    from medcondense.ingest.dicom import DecodeError

    if not isinstance(source, RemoteInstance):
        return source
    try:
        return Retrieved(source.load())
    except DecodeError as exc:
        return Retrieved(reason=str(exc))


def batched(mapper: Callable[..., Iterable[Any]], task: Callable, items: list[tuple], *,
            batch: int = BATCH) -> Iterator[Any]:
    """``mapper(task, items)`` for items whose first element may be a :class:`RemoteInstance`:
    retrieved :data:`BATCH` at a time with :data:`CONCURRENT_REQUESTS` requests in flight
    (threads: the wait is the network's), then decoded by the mapper (processes with
    ``--workers``). At most one batch of raw instances is in memory."""
    pool = ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS, thread_name_prefix="wado")
    try:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            sources = list(pool.map(_retrieve, [item[0] for item in chunk]))
            yield from mapper(task, [(source, *item[1:]) for source, item in zip(sources, chunk)])
    finally:  # Ctrl-C or an error: drop queued requests, do not wait for them
        pool.shutdown(wait=False, cancel_futures=True)
