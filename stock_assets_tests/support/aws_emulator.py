"""Emulated AWS for tests: moto's real HTTP server on loopback, and an environment pointing at it.

The server is moto in server mode (`moto[server]`), listening on 127.0.0.1 on a port the OS picks;
boto3 reaches it over HTTP exactly as it reaches AWS, through the standard `AWS_ENDPOINT_URL`
variable, so the code under test has no test-only switch. The credentials are moto's dummies and
any shared AWS config of the developer is hidden.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's server on 127.0.0.1 (a free port); yield its endpoint URL; stop it after."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_environment(endpoint: str, config_dir: str) -> dict[str, str]:
    """Variables that point boto3 at the emulator with dummy credentials, away from ~/.aws."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.path.join(config_dir, "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(config_dir, "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


HIDDEN_AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_ECS",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


@contextmanager
def emulated_aws(config_dir: str) -> Iterator[str]:
    """A moto server, with this process's environment pointed at it while the block runs."""
    with moto_server() as endpoint:
        values = aws_environment(endpoint, config_dir)
        touched = set(values) | set(HIDDEN_AWS_VARIABLES)
        saved = {name: os.environ.get(name) for name in touched}
        for name in HIDDEN_AWS_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(values)
        try:
            yield endpoint
        finally:
            for name, value in saved.items():  # only what was changed here, nothing else
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
