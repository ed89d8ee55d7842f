"""Drives a userstate server with ZITADEL's official Python SDK (PyPI `zitadel-client`), unchanged.

Usage: python zitadel_sdk_check.py BASE_URL TOKEN
Every v2 user call the server implements, through the SDK's own client (the Connect protocol
with JSON bodies); a refused call must surface as the SDK's ApiError with the HTTP status and
Connect error body ZITADEL would send. Prints "ok" and exits 0 when everything holds.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore")

import zitadel_client as zitadel  # noqa: E402
from zitadel_client.exceptions import ApiError  # noqa: E402
from zitadel_client.models import (  # noqa: E402
    UserServiceAddHumanUserRequest,
    UserServiceDeactivateUserRequest,
    UserServiceDeleteUserRequest,
    UserServiceGetUserByIDRequest,
    UserServiceLockUserRequest,
    UserServiceOrganization,
    UserServiceReactivateUserRequest,
    UserServiceSetHumanEmail,
    UserServiceSetHumanProfile,
    UserServiceUnlockUserRequest,
)


def main(base_url: str, token: str) -> None:
    client = zitadel.Zitadel.with_access_token(base_url, token)
    users = client.users
    added = users.add_human_user(
        UserServiceAddHumanUserRequest(
            user_id="py-1",
            username="grace",
            organization=UserServiceOrganization(org_id="acme"),
            profile=UserServiceSetHumanProfile(given_name="Grace", family_name="Hopper"),
            email=UserServiceSetHumanEmail(email="grace@example.com", is_verified=True),
        )
    )
    assert added.user_id == "py-1", added
    assert added.details.sequence == "1", added.details
    assert added.details.resource_owner == "acme", added.details

    steps = [
        (users.deactivate_user, UserServiceDeactivateUserRequest),
        (users.reactivate_user, UserServiceReactivateUserRequest),
        (users.lock_user, UserServiceLockUserRequest),
        (users.unlock_user, UserServiceUnlockUserRequest),
    ]
    for sequence, (call, request) in enumerate(steps, start=2):
        answer = call(request(user_id="py-1"))
        assert answer.details.sequence == str(sequence), (call, answer.details)

    got = users.get_user_by_id(UserServiceGetUserByIDRequest(user_id="py-1"))
    assert got.user.user_id == "py-1", got.user
    assert str(got.user.state.value) == "USER_STATE_ACTIVE", got.user.state
    assert got.user.username == "grace", got.user
    assert got.user.human.profile.given_name == "Grace", got.user.human
    assert got.user.human.email.email == "grace@example.com", got.user.human
    assert got.user.human.email.is_verified is True, got.user.human

    try:
        users.unlock_user(UserServiceUnlockUserRequest(user_id="py-1"))
        raise AssertionError("unlocking an active user must fail")
    except ApiError as refused:
        assert refused.code == 400, refused.code
        body = refused.response_body
        body = json.loads(body) if isinstance(body, (str, bytes)) else body
        assert body["code"] == "failed_precondition", body
        assert body["details"][0]["type"] == "zitadel.v1.ErrorDetail", body

    removed = users.delete_user(UserServiceDeleteUserRequest(user_id="py-1"))
    assert removed.details.sequence == "6", removed.details
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
