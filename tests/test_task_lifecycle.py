"""The full on-chain life of a task, from Python, against a real anvil."""

from __future__ import annotations

import pytest
from eth_account import Account

from pcn.chain.errors import ContractRevert
from pcn.chain.ledger import Ledger
from pcn.chain.types import ParticipantState, RefusalReason, TaskStatus, epsilon_to_fixed
from pcn.devnet.anvil import rpc_call
from pcn.devnet.deploy import devnet_key
from tests.helpers import build_consortium, h, receipt_for, request_for


def _names(res: object) -> list[str]:
    return [e.name for e in res.events]  # type: ignore[attr-defined]


def test_three_party_lifecycle_with_relayed_eip712_approval(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = c.orgs
    task_id, sub = bank.submit_task(request_for(c, epsilon=0.5))
    assert sub.event("TaskSubmitted").args["participants"] == [o.address for o in c.orgs]
    assert bank.task(task_id).status is TaskStatus.PENDING
    assert bank.task_approvers(task_id) == {o.address: False for o in c.orgs}

    bank.approve(task_id, bank.request_hash(task_id))
    telecom.approve(task_id, telecom.request_hash(task_id))
    # The hospital signs off-line; a relayer that owns nothing (the auditor's account) submits it.
    signed = hospital.sign_approval(task_id, hospital.request_hash(task_id), deadline=hospital.block_timestamp() + 600)
    digest = hospital.call(
        "TaskManager", "approvalDigest", task_id, signed.request_hash, hospital.address, signed.nonce, signed.deadline
    )
    assert Account._recover_hash(digest, signature=signed.signature) == hospital.address
    relayer = Ledger(deployment, account=Account.from_key(devnet_key(1)))
    res = relayer.approve_by_sig(signed)
    assert _names(res)[-1] == "TaskAuthorised"
    approved = res.event("TaskApproved").args
    assert approved["owner"] == hospital.address and approved["relayer"] == relayer.address

    task = bank.task(task_id)
    assert task.status is TaskStatus.AUTHORISED and task.approvals == 3
    for org in c.orgs:  # one use and 0.5 ε consumed on every input dataset
        ds = bank.dataset(c.datasets[org.address])
        assert (ds.uses, ds.epsilon_spent) == (1, epsilon_to_fixed(0.5))

    for org in c.orgs:
        org.start(task_id)
        assert bank.participant_state(task_id, org.address) is ParticipantState.STARTED
    assert bank.task(task_id).status is TaskStatus.RUNNING

    result = h("the joint mean")
    for org in c.orgs[:2]:
        org.submit_receipt(task_id, receipt_for(c, org, result))
    assert bank.task(task_id).status is TaskStatus.RUNNING
    last = hospital.submit_receipt(task_id, receipt_for(c, hospital, result))
    assert last.event("TaskCompleted").args["resultHash"] == "0x" + result.hex()
    final = bank.task(task_id)
    assert final.status is TaskStatus.COMPLETED and final.result_hash == result
    stored = bank.receipt(task_id, telecom.address)
    assert stored.result_hash == result and stored.input_fingerprint == h(f"input-{telecom.address}")


@pytest.mark.parametrize("bad_field", ["result", "algorithm"])
def test_disagreeing_receipts_make_a_dispute(deployment, snapshot, bad_field):
    c = build_consortium(deployment, n_orgs=3)
    task_id = _running_task(c)
    result = h("r")
    for i, org in enumerate(c.orgs):
        odd = i == 1
        r = receipt_for(
            c,
            org,
            h("other") if odd and bad_field == "result" else result,
            algorithm=h("other-code") if odd and bad_field == "algorithm" else None,
        )
        res = org.submit_receipt(task_id, r)
    assert "TaskDisputed" in _names(res)
    assert c.admin.task(task_id).status is TaskStatus.DISPUTED


def _running_task(c, epsilon: float = 0.5) -> int:
    task_id, _ = c.orgs[0].submit_task(request_for(c, epsilon=epsilon))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    for org in c.orgs:
        org.start(task_id)
    return task_id


@pytest.mark.parametrize("reason", [r for r in RefusalReason if r is not RefusalReason.NONE])
def test_every_refusal_reason_is_recorded(deployment, snapshot, reason):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    for org in c.orgs:
        org.approve(task_id, org.request_hash(task_id))
    res = c.orgs[1].refuse(task_id, reason, h("detail"))
    ev = res.event("TaskRefused").args
    assert ev["reason"] == int(reason) and ev["participant"] == c.orgs[1].address
    task = c.admin.task(task_id)
    assert task.status is TaskStatus.REFUSED and task.refusal_reason is reason
    with pytest.raises(ContractRevert) as err:  # refused is terminal
        c.orgs[0].start(task_id)
    assert err.value.name == "InvalidTaskStatus" and "refused" in err.value.message


@pytest.mark.parametrize("code", [0, len(RefusalReason)])
def test_unknown_refusal_reason_is_rejected(deployment, snapshot, code):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    with pytest.raises(ContractRevert) as err:
        c.orgs[1].refuse(task_id, code, h("detail"))
    assert err.value.name == "InvalidRefusalReason"
    assert c.admin.task(task_id).status is TaskStatus.PENDING


def test_cancel_before_start_only_by_requester(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    with pytest.raises(ContractRevert, match="NotRequester"):
        c.orgs[1].cancel(task_id)
    assert "TaskCancelled" in _names(c.orgs[0].cancel(task_id))
    assert c.admin.task(task_id).status is TaskStatus.CANCELLED
    running = _running_task(c)
    with pytest.raises(ContractRevert, match="InvalidTaskStatus"):
        c.orgs[0].cancel(running)


def test_deadline_passes_then_anyone_expires(deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=2)
    task_id, _ = c.orgs[0].submit_task(request_for(c, deadline_in=120))
    c.orgs[0].approve(task_id, c.orgs[0].request_hash(task_id))
    with pytest.raises(ContractRevert, match="TaskNotExpired"):
        c.admin.expire(task_id)
    rpc_call(devnet.rpc_url, "evm_increaseTime", [121])
    rpc_call(devnet.rpc_url, "evm_mine")
    with pytest.raises(ContractRevert) as err:
        c.orgs[1].approve(task_id, c.orgs[1].request_hash(task_id))
    assert err.value.name == "TaskDeadlinePassed"
    c.admin.expire(task_id)
    assert c.admin.task(task_id).status is TaskStatus.EXPIRED


def test_suspended_organisation_cannot_act(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    task_id = _running_task(c)
    c.admin.suspend(c.orgs[2].address)
    for action in (
        lambda: c.orgs[2].submit_receipt(task_id, receipt_for(c, c.orgs[2], h("r"))),
        lambda: c.orgs[2].refuse(task_id, RefusalReason.PROTOCOL_FAILURE, h("d")),
        lambda: c.orgs[2].submit_task(request_for(c, requester=2)),
    ):
        with pytest.raises(ContractRevert) as err:
            action()
        assert err.value.name == "OrganisationNotActive"
    task2, _ = c.orgs[0].submit_task(request_for(c, orgs=[0, 1]))
    c.admin.reinstate(c.orgs[2].address)
    c.orgs[2].submit_receipt(task_id, receipt_for(c, c.orgs[2], h("r")))
    assert c.admin.participant_state(task_id, c.orgs[2].address) is ParticipantState.RECEIPTED
    assert c.admin.task(task2).status is TaskStatus.PENDING


def test_concurrent_approvals_all_land_and_authorise(deployment, snapshot):
    """Every owner approves at the same moment: whichever lands last also authorises the task
    (the costlier path its gas estimate did not see) and must not run out of gas."""
    import threading

    c = build_consortium(deployment, n_orgs=4)
    task_id, _ = c.orgs[0].submit_task(request_for(c))
    barrier = threading.Barrier(len(c.orgs))
    errors: list[Exception] = []

    def approve(org: Ledger) -> None:
        barrier.wait()
        try:
            org.approve(task_id, org.request_hash(task_id))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=approve, args=(o,)) for o in c.orgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert c.admin.task(task_id).status is TaskStatus.AUTHORISED
