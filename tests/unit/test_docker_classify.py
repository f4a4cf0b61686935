"""Docker's real error texts, turned into orch's named errors (retry or fail at once)."""

from __future__ import annotations

import pytest

from orchestrator.primitives.errors import (
    EngineUnavailable,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    VMExists,
    VMNotFound,
)
from orchestrator.providers.docker import classify

VM = "orch-1a2b3c4d-gw0"

CASES = [
    pytest.param(
        "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
        EngineUnavailable,
        id="daemon-down",
    ),
    pytest.param(
        'error during connect: Get "http://%2F%2F.%2Fpipe%2FdockerDesktopLinuxEngine/v1.46/containers/json": '
        "open //./pipe/dockerDesktopLinuxEngine: The system cannot find the file specified.\n",
        EngineUnavailable,
        id="desktop-down",
    ),
    pytest.param("Error response from daemon: No such container: x\n", VMNotFound, id="no-such-container"),
    pytest.param("Error: No such object: orch-1a2b3c4d-gw0\n", VMNotFound, id="inspect-no-such-object"),
    pytest.param(
        "Unable to find image 'nope:latest' locally\n"
        "docker: Error response from daemon: pull access denied for nope, repository does not exist or may "
        "require 'docker login': denied: requested access to the resource is denied.\n"
        "See 'docker run --help'.\n",
        PermanentProviderError,
        id="unknown-image-pull",
    ),
    pytest.param("Unable to find image 'nope:latest' locally\n", PermanentProviderError, id="unknown-image"),
    pytest.param(
        "docker: Error response from daemon: No such image: nope:latest.\nSee 'docker run --help'.\n",
        PermanentProviderError,
        id="no-such-image-pull-never",
    ),
    pytest.param(
        'docker: Error response from daemon: Conflict. The container name "/x" is already in use by container '
        '"abc". You have to remove (or rename) that container to be able to reuse that name.\n'
        "See 'docker run --help'.\n",
        VMExists,
        id="name-conflict",
    ),
    pytest.param(
        "docker: Error response from daemon: Invalid container name (../x), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed.\n",
        PermanentProviderError,
        id="invalid-name",
    ),
    pytest.param("unknown flag: --bogus\nSee 'docker run --help'.\n", PermanentProviderError, id="unknown-flag"),
    pytest.param(
        'Error response from daemon: Get "https://registry-1.docker.io/v2/": context deadline exceeded\n',
        TransientProviderError,
        id="context-deadline",
    ),
    pytest.param("context deadline exceeded", TransientProviderError, id="context-deadline-bare"),
    pytest.param(
        'Error response from daemon: Get "https://registry-1.docker.io/v2/": net/http: TLS handshake timeout\n',
        TransientProviderError,
        id="tls-timeout",
    ),
    pytest.param(
        "Error response from daemon: removal of container orch-1a2b3c4d-gw0 is already in progress\n",
        TransientProviderError,
        id="removal-in-progress",
    ),
    pytest.param(
        "Error response from daemon: toomanyrequests: You have reached your pull rate limit. too many requests\n",
        TransientProviderError,
        id="rate-limit",
    ),
    pytest.param(  # exec into a machine between two boots (its restart policy at work)
        "Error response from daemon: Container 78b4e787067c is restarting, wait until the container is running\n",
        TransientProviderError,
        id="restarting",
    ),
]


@pytest.mark.parametrize("stderr, kind", CASES)
def test_docker_error_texts_are_classified(stderr: str, kind: type[ProviderError]) -> None:
    err = classify("create", VM, 125, stderr)
    assert type(err) is kind
    assert isinstance(err, ProviderError)
    assert err.transient is (kind is TransientProviderError)
    assert (err.operation, err.vm) == ("create", VM)


@pytest.mark.parametrize("stderr, kind", CASES)
def test_message_is_one_line_with_dockers_own_words(stderr: str, kind: type[ProviderError]) -> None:
    message = str(classify("create", VM, 1, stderr))
    assert "\n" not in message
    assert " ".join(stderr.split()) in message


def test_engine_down_says_how_to_fix_it() -> None:
    err = classify(
        "info", "", 1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    )
    assert isinstance(err, EngineUnavailable)
    assert not err.transient  # retrying a stopped engine only wastes time
    assert "start it" in str(err)


def test_unknown_image_is_never_retried() -> None:
    err = classify("create", VM, 125, "Unable to find image 'nope:latest' locally")
    assert isinstance(err, PermanentProviderError)
    assert not isinstance(err, TransientProviderError)
    assert not err.transient


def test_vm_not_found_is_permanent() -> None:
    err = classify("delete", VM, 1, "Error response from daemon: No such container: x")
    assert isinstance(err, PermanentProviderError)
    assert not err.transient


@pytest.mark.parametrize("stderr", ["", "   \n"])
def test_empty_stderr_reports_the_exit_code(stderr: str) -> None:
    err = classify("create", VM, 137, stderr)
    assert isinstance(err, PermanentProviderError)
    assert "137" in str(err)


def test_unknown_text_fails_at_once_with_dockers_message() -> None:
    err = classify("create", VM, 125, "docker: something nobody has seen before.\n")
    assert type(err) is PermanentProviderError
    assert "something nobody has seen before" in str(err)
