"""The GitHub App client against a fake GitHub that speaks the real protocol over loopback HTTP."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from devbox.broker.github import AppConfig, GitHubApp, Token, make_jwt, scrub
from devbox.errors import DevboxError, ExitCode
from tests.fakegithub import MSG_IAT, MSG_NOT_ACCESSIBLE, MSG_PERMISSIONS, FakeGitHub, http_date, rsa_keypair

APP_ID = "12345"
INSTALLATION = 4242
INSTALLATIONS = {"acme": (INSTALLATION, {"api", "web", "docs"}, {"contents": "write", "pull_requests": "write"})}
READ = {"contents": "read"}


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(APP_ID, installations=INSTALLATIONS) as fake:
        yield fake


class Client:
    """A GitHubApp on the fake, with a sleep that records instead of waiting."""

    def __init__(self, url: str, key: bytes | None = None, **kw: Any) -> None:
        self.sleeps: list[float] = []
        config = AppConfig(APP_ID, key or rsa_keypair()[0], url, kw.pop("installation_id", None))
        self.app = GitHubApp(config, sleep=self.sleeps.append, **kw)


def client(gh: FakeGitHub, **kw: Any) -> tuple[GitHubApp, list[float]]:
    c = Client(gh.url, **kw)
    return c.app, c.sleeps


def failure(call: Any, *args: Any) -> DevboxError:
    with pytest.raises(DevboxError) as error:
        call(*args)
    assert error.value.code == ExitCode.CREDENTIALS
    return error.value


# -- the JWT ---------------------------------------------------------------------------


def test_jwt_is_rs256_signed_by_the_app_key_with_githubs_time_window() -> None:
    private, public = rsa_keypair()
    token = make_jwt(APP_ID, private, 1_700_000_000.7)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iat": 1_699_999_940, "exp": 1_700_000_540, "iss": APP_ID}
    assert claims["exp"] - claims["iat"] <= 600


def test_secrets_stay_out_of_reprs() -> None:
    private, _ = rsa_keypair()
    config = AppConfig(APP_ID, private)
    token = Token("ghs_" + "x" * 36, None, {}, ())  # type: ignore[arg-type]
    assert "PRIVATE" not in repr(config) and "ghs_" not in repr(token)
    assert "PRIVATE" not in repr(GitHubApp(config).config)


# -- the happy path --------------------------------------------------------------------


def test_a_token_for_exactly_the_requested_repos_and_permissions(gh: FakeGitHub) -> None:
    app, sleeps = client(gh)
    installation = app.installation_for("acme", "api")
    token = app.create_token(installation, ["web", "api"], {"contents": "read", "pull_requests": "write"})

    assert installation == INSTALLATION
    assert token.repositories == ("api", "web")
    assert token.permissions == {"metadata": "read", "contents": "read", "pull_requests": "write"}
    assert token.expires_at.utcoffset() is not None and token.expires_at.utcoffset().total_seconds() == 0
    assert token.expires_at.timestamp() == gh.minted[token.token].expires_at
    assert gh.token_allows(token.token, "acme/api", "contents", "read")
    assert gh.token_allows(token.token, "acme/web", "pull_requests", "write")
    assert not gh.token_allows(token.token, "acme/api", "contents", "write")
    assert not gh.token_allows(token.token, "acme/docs")
    assert sleeps == []

    lookup, mint = gh.requests
    assert (lookup.method, lookup.path, lookup.status) == ("GET", "/repos/acme/api/installation", 200)
    assert (mint.method, mint.path, mint.status) == ("POST", f"/app/installations/{INSTALLATION}/access_tokens", 201)
    assert mint.body == {"repositories": ["web", "api"], "permissions": {"contents": "read", "pull_requests": "write"}}
    for request in gh.requests:
        assert request.auth == "Bearer" and request.claims is not None and request.claims["iss"] == APP_ID
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["user-agent"] == "devbox-broker"
        assert "authorization" not in request.headers


@pytest.mark.parametrize("suffix", ["", "/"])
def test_github_enterprise_server_api_url_with_a_path_prefix(suffix: str) -> None:
    with FakeGitHub(APP_ID, installations=INSTALLATIONS, prefix="/api/v3") as ghes:
        app = Client(ghes.url + suffix).app
        token = app.create_token(app.installation_for("acme", "docs"), ["docs"], READ)
        app.revoke(token.token)
    assert ghes.url.endswith("/api/v3")
    assert [r.path for r in ghes.requests] == [
        "/api/v3/repos/acme/docs/installation",
        f"/api/v3/app/installations/{INSTALLATION}/access_tokens",
        "/api/v3/installation/token",
    ]
    assert ghes.minted[token.token].revoked


def test_an_installation_id_in_the_config_skips_the_lookup(gh: FakeGitHub) -> None:
    app, _ = client(gh, installation_id=INSTALLATION)
    assert app.installation_for("acme", "api") == INSTALLATION
    assert gh.requests == []


# -- server errors, connection errors, timeouts -------------------------------------


def test_server_errors_are_retried_with_backoff(gh: FakeGitHub) -> None:
    gh.queue(502, {"message": "Server Error"})
    gh.queue(503, "<html>unavailable</html>")
    app, sleeps = client(gh)
    token = app.create_token(INSTALLATION, ["api"], READ)
    assert gh.token_allows(token.token, "acme/api")
    assert [r.status for r in gh.requests] == [502, 503, 201]
    assert sleeps == [0.5, 1.0]


def test_server_errors_give_up_after_three_retries(gh: FakeGitHub) -> None:
    for _ in range(5):
        gh.queue(500, {"message": "Internal Server Error"})
    app, sleeps = client(gh)
    error = failure(app.create_token, INSTALLATION, ["api"], READ)
    assert str(error) == (
        f"GitHub API POST app/installations/{INSTALLATION}/access_tokens failed after 4 attempts: "
        "GitHub answered 500: Internal Server Error"
    )
    assert len(gh.requests) == 4 and sleeps == [0.5, 1.0, 2.0]


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    c = Client(url)
    error = failure(c.app.installation_for, "acme", "api")
    assert str(error).startswith(
        f"GitHub API GET repos/acme/api/installation failed after 4 attempts: cannot reach GitHub at {url}: "
    )
    assert c.sleeps == [0.5, 1.0, 2.0]


def test_a_dropped_connection_and_a_timeout_are_retried(gh: FakeGitHub) -> None:
    gh.queue(drop=True)
    gh.queue(hang=True)
    app, sleeps = client(gh, timeout=1.0)
    assert app.installation_for("acme", "web") == INSTALLATION
    assert [r.status for r in gh.requests] == [0, 0, 200]
    assert sleeps == [0.5, 1.0]


# -- clock skew ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "complaint"),
    [(900.0, "'Expiration time' claim ('exp')"), (-300.0, "'Issued at' claim ('iat')")],
    ids=["github-ahead", "github-behind"],
)
def test_a_jwt_refused_for_its_time_is_signed_again_with_githubs_clock(
    gh: FakeGitHub, skew: float, complaint: str
) -> None:
    gh.offset = skew
    app, sleeps = client(gh)
    assert app.installation_for("acme", "api") == INSTALLATION
    first, second = gh.requests
    assert first.status == 401 and second.status == 200
    assert abs(app.clock_offset - skew) <= 2  # the Date header has whole seconds
    assert second.claims is not None and abs(second.claims["iat"] - (gh.now() - 60)) <= 5
    assert sleeps == []

    app.create_token(INSTALLATION, ["api"], READ)  # the offset is kept: no second 401
    assert [r.status for r in gh.requests[2:]] == [201]


def test_the_clock_is_corrected_only_once(gh: FakeGitHub) -> None:
    for _ in range(3):
        gh.queue(401, {"message": MSG_IAT}, {"Date": http_date(time.time() + 3600)})
    app, sleeps = client(gh)
    error = failure(app.installation_for, "acme", "api")
    assert str(error).startswith(f"GitHub answered 401 while looking up the App's installation for acme/api: {MSG_IAT}")
    assert "a clock problem, not a key problem" in str(error) and "private key" not in str(error)
    assert len(gh.requests) == 2 and sleeps == []


@pytest.mark.parametrize(("skew", "side"), [(3600.0, "behind"), (-3600.0, "ahead of")])
def test_a_refusal_with_githubs_date_far_from_ours_is_named_a_clock_problem(
    gh: FakeGitHub, skew: float, side: str
) -> None:
    """No iat/exp in the message, but GitHub's Date is an hour from ours: the clock, not the key."""
    gh.queue(401, {"message": "Bad credentials"}, {"Date": http_date(time.time() + skew)})
    app, _ = client(gh)
    error = failure(app.installation_for, "acme", "api")
    found = re.search(rf"this host's clock is (\d+) s {side} GitHub's Date header", str(error))
    assert found and abs(int(found[1]) - 3600) <= 2  # the Date header has whole seconds
    assert "private key" not in str(error)


def test_a_refusal_with_githubs_date_close_to_ours_is_named_a_key_problem(gh: FakeGitHub) -> None:
    gh.queue(401, {"message": "Bad credentials"})
    app, _ = client(gh)
    error = failure(app.installation_for, "acme", "api")
    assert "check the App id and its private key" in str(error) and "clock" not in str(error)


def test_a_jwt_signed_with_another_key_is_refused_without_retry(gh: FakeGitHub) -> None:
    app, sleeps = client(gh, key=rsa_keypair("stranger")[0])
    error = failure(app.installation_for, "acme", "api")
    assert "401" in str(error) and "A JSON web token could not be decoded" in str(error)
    assert len(gh.requests) == 1 and sleeps == [] and app.clock_offset == 0


# -- answers that are final ------------------------------------------------------------


def test_app_not_installed_names_the_owner_and_is_not_retried(gh: FakeGitHub) -> None:
    app, sleeps = client(gh)
    error = failure(app.installation_for, "umbrella", "labs")
    assert str(error) == (
        "the GitHub App is not installed for umbrella (install it on the account or org that owns umbrella/labs)"
    )
    assert len(gh.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("repos", "permissions", "github_says"),
    [(["api", "secret"], READ, MSG_NOT_ACCESSIBLE), (["api"], {"administration": "write"}, MSG_PERMISSIONS)],
    ids=["repo-not-in-installation", "permission-not-granted"],
)
def test_unprocessable_token_request_is_not_retried(
    gh: FakeGitHub, repos: list[str], permissions: dict[str, str], github_says: str
) -> None:
    app, sleeps = client(gh)
    error = failure(app.create_token, INSTALLATION, repos, permissions)
    assert str(error) == (
        f"GitHub App installation {INSTALLATION} cannot grant a token for {', '.join(repos)} "
        "(some of these repositories are not in the installation, or the permissions are not granted): "
        f"{github_says}"
    )
    assert [r.status for r in gh.requests] == [422] and sleeps == [] and gh.minted == {}


def test_other_client_errors_report_status_and_message(gh: FakeGitHub) -> None:
    gh.queue(
        403,
        {"message": "Resource not accessible by integration"},
        {"x-ratelimit-remaining": "4999", "x-ratelimit-reset": "1"},
    )
    app, sleeps = client(gh)
    error = failure(app.create_token, INSTALLATION, ["api"], READ)
    assert str(error) == (
        f"GitHub answered 403 while creating a token for installation {INSTALLATION}: Resource not accessible by integration"
    )
    assert len(gh.requests) == 1 and sleeps == []


def test_a_redirect_is_not_followed(gh: FakeGitHub) -> None:
    with FakeGitHub(APP_ID, installations=INSTALLATIONS) as elsewhere:
        gh.queue(301, {"message": "Moved Permanently"}, {"Location": f"{elsewhere.url}/repos/acme/api/installation"})
        app, _ = client(gh)
        error = failure(app.installation_for, "acme", "api")
    assert str(error).startswith("GitHub answered 301 while looking up")
    assert elsewhere.requests == []


# -- rate limits -----------------------------------------------------------------------


def test_rate_limits_are_waited_out_as_github_asks(gh: FakeGitHub) -> None:
    date = 1_800_000_000
    gh.queue(429, {"message": "You have exceeded a secondary rate limit."}, {"retry-after": "7"})
    gh.queue(
        403,
        {"message": "API rate limit exceeded for installation."},
        {"Date": http_date(date), "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(date + 30)},
    )
    app, sleeps = client(gh)
    assert app.installation_for("acme", "api") == INSTALLATION
    assert [r.status for r in gh.requests] == [429, 403, 200]
    assert sleeps == [7.0, 30.0]


def test_rate_limits_count_against_the_same_retries(gh: FakeGitHub) -> None:
    for _ in range(4):
        gh.queue(429, {"message": "slow down"}, {"retry-after": "1"})
    app, sleeps = client(gh)
    error = failure(app.installation_for, "acme", "api")
    assert str(error).endswith("failed after 4 attempts: rate limited by GitHub (429: slow down)")
    assert sleeps == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "3600"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800003600", "Date": http_date(1_800_000_000)},
    ],
    ids=["retry-after", "ratelimit-reset"],
)
def test_a_rate_limit_longer_than_the_maximum_wait_gives_up(gh: FakeGitHub, headers: dict[str, str]) -> None:
    gh.queue(403, {"message": "API rate limit exceeded"}, headers)
    app, sleeps = client(gh)
    error = failure(app.installation_for, "acme", "api")
    assert str(error) == (
        "rate limited by GitHub (403: API rate limit exceeded); it resets in 3600 s, longer than the broker waits (60 s)"
    )
    assert len(gh.requests) == 1 and sleeps == []


# -- broader answers are refused -------------------------------------------------------


def _extra_repo(body: dict[str, Any]) -> None:
    body["repositories"].append({"name": "docs"})


def _extra_permission(body: dict[str, Any]) -> None:
    body["permissions"]["administration"] = "read"


def _higher_level(body: dict[str, Any]) -> None:
    body["permissions"]["contents"] = "write"


def _all_repos(body: dict[str, Any]) -> None:
    body["repository_selection"] = "all"


def _metadata_write(body: dict[str, Any]) -> None:
    body["permissions"]["metadata"] = "write"


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_extra_repo, "repositories differ (extra: docs; missing: -)"),
        (_extra_permission, "permission administration=read was not requested"),
        (_higher_level, "permission contents=write was not requested"),
        (_all_repos, "repository_selection is 'all', not 'selected'"),
        (_metadata_write, "permission metadata=write was not requested"),
    ],
)
def test_a_broader_token_is_refused_and_revoked(gh: FakeGitHub, tamper: Any, named: str) -> None:
    gh.tamper(tamper)
    app, _ = client(gh)
    error = failure(app.create_token, INSTALLATION, ["api", "web"], READ)
    assert str(error) == f"refused a GitHub token broader than requested: {named}"
    (minted,) = gh.minted
    assert minted not in str(error)
    assert gh.minted[minted].revoked
    assert [r.method for r in gh.requests] == ["POST", "DELETE"]


def test_github_adds_metadata_read_and_that_is_accepted(gh: FakeGitHub) -> None:
    app, _ = client(gh)
    token = app.create_token(INSTALLATION, ["api"], READ)
    assert token.permissions["metadata"] == "read"
    assert not gh.minted[token.token].revoked


def test_a_malformed_token_answer_is_refused(gh: FakeGitHub) -> None:
    gh.queue(201, {"expires_at": "soon"})
    app, _ = client(gh)
    assert str(failure(app.create_token, INSTALLATION, ["api"], READ)) == "GitHub's token response is malformed"


@pytest.mark.parametrize(
    ("repos", "permissions"),
    [([], READ), (["api"], {}), (["acme/api"], READ), (["api"], {"contents": "all"})],
)
def test_a_request_that_would_be_read_as_everything_is_not_sent(
    gh: FakeGitHub, repos: list[str], permissions: dict[str, str]
) -> None:
    app, _ = client(gh)
    with pytest.raises(DevboxError) as error:
        app.create_token(INSTALLATION, repos, permissions)
    assert error.value.code == ExitCode.INVALID_INPUT
    assert gh.requests == []


# -- revocation ------------------------------------------------------------------------


def test_revoke_and_revoke_again(gh: FakeGitHub) -> None:
    app, sleeps = client(gh)
    token = app.create_token(INSTALLATION, ["api"], READ)
    app.revoke(token.token)
    assert not gh.token_allows(token.token, "acme/api")
    app.revoke(token.token)  # 401: revoked already, which is what was wanted
    deletes = [r for r in gh.requests if r.method == "DELETE"]
    assert [(r.path, r.auth, r.status) for r in deletes] == [("/installation/token", "token", 204)] + [
        ("/installation/token", "token", 401)
    ]
    assert sleeps == []


def test_a_401_just_after_the_mint_is_replication_lag_and_retried_once(gh: FakeGitHub) -> None:
    app, sleeps = client(gh)
    token = app.create_token(INSTALLATION, ["api"], READ)
    gh.queue(401, {"message": "Bad credentials"})  # this replica does not know the new token yet
    app.revoke(token.token)
    assert gh.minted[token.token].revoked and not gh.token_allows(token.token, "acme/api")
    assert sleeps == [2.0]


def test_a_401_long_after_the_mint_is_taken_as_revoked_already(gh: FakeGitHub) -> None:
    now = [1000.0]
    app, sleeps = client(gh, monotonic=lambda: now[0])
    token = app.create_token(INSTALLATION, ["api"], READ)
    now[0] += 120
    gh.queue(401, {"message": "Bad credentials"})
    app.revoke(token.token)
    assert sleeps == [] and len([r for r in gh.requests if r.method == "DELETE"]) == 1


def test_revoke_retries_server_errors(gh: FakeGitHub) -> None:
    app, sleeps = client(gh)
    token = app.create_token(INSTALLATION, ["api"], READ)
    gh.queue(502)
    app.revoke(token.token)
    assert gh.minted[token.token].revoked and sleeps == [0.5]


# -- no secret in any message ------------------------------------------------------------


def _secrets(gh: FakeGitHub) -> dict[str, str]:
    app, _ = client(gh)
    minted = app.create_token(INSTALLATION, ["api"], READ).token
    gh.requests.clear()
    private = rsa_keypair()[0].decode()
    return {"token": minted, "jwt": make_jwt(APP_ID, rsa_keypair()[0], time.time()), "key": private}


@pytest.mark.parametrize("status", [500, 422, 403, 400, 401])
@pytest.mark.parametrize("kind", ["token", "jwt", "key"])
def test_no_secret_from_an_echoing_body_reaches_the_message(gh: FakeGitHub, status: int, kind: str) -> None:
    secret = _secrets(gh)[kind]
    for _ in range(4):
        gh.queue(status, {"message": f"Bad thing near {secret} here", "echo": secret, "errors": [secret]})
    app, _ = client(gh)
    error = failure(app.create_token, INSTALLATION, ["api"], READ)
    text = str(error)
    assert secret not in text and secret[:24] not in text
    assert "Bad thing near [redacted]" in text
    assert "ghs_" not in text and "eyJ" not in text and "PRIVATE KEY" not in text


def test_a_long_github_message_is_cut(gh: FakeGitHub) -> None:
    gh.queue(400, {"message": "x" * 5000})
    app, _ = client(gh)
    error = failure(app.installation_for, "acme", "api")
    assert len(str(error)) < 300 and str(error).endswith("x...")


def test_scrub() -> None:
    token = "ghp_" + "A1" * 18
    assert scrub(f"a {token} b gho_short c") == "a [redacted] b gho_short c"
    assert scrub("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxIn0.c2ln-_x!") == "[redacted]!"
    assert scrub("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter") == "[redacted] after"
    assert scrub("-----BEGIN PRIVATE KEY-----\nMIIE cut off") == "[redacted]"
    assert len(scrub("y" * 500)) == 200
