"""Bad input reverts with a named, readable error and writes nothing."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest

from pcn import paths
from pcn.chain.errors import MESSAGES, ContractRevert, ErrorDecoder
from pcn.chain.ledger import Ledger
from pcn.chain.types import (
    Fingerprint,
    OrgStatus,
    ParticipantState,
    PolicyLimits,
    RefusalReason,
    TaskRules,
    TaskStatus,
    epsilon_to_fixed,
)
from pcn.devnet.anvil import rpc_call
from tests.helpers import build_consortium, h, request_for


def _revert(fn, name: str) -> ContractRevert:
    with pytest.raises(ContractRevert) as err:
        fn()
    assert err.value.name == name, err.value
    assert err.value.message and not err.value.message.startswith(name + "(")  # a sentence, not raw args
    return err.value


def test_submit_rejects_unknown_and_disallowed_inputs(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = c.orgs
    base = request_for(c)
    e = _revert(lambda: bank.submit_task(dataclasses.replace(base, dataset_ids=[999])), "UnknownDataset")
    assert "999" in e.message
    _revert(lambda: bank.submit_task(dataclasses.replace(base, algorithm_hash=h("nope"))), "UnknownAlgorithm")
    other = h("unapproved-algorithm")
    bank.register_algorithm(other, "psi", "1", h("d"))
    # #13.7: a registration is only a proposal until the consortium admin approves it
    e = _revert(lambda: bank.submit_task(dataclasses.replace(base, algorithm_hash=other)), "AlgorithmNotApproved")
    assert "0x" + other.hex() in e.message
    _revert(lambda: bank.approve_algorithm(other), "NotConsortiumAdmin")
    c.admin.approve_algorithm(other)
    e = _revert(lambda: bank.submit_task(dataclasses.replace(base, algorithm_hash=other)), "AlgorithmNotAllowed")
    assert "0x" + other.hex() in e.message
    hospital.set_requester_allowed(c.datasets[hospital.address], bank.address, False)
    e = _revert(lambda: bank.submit_task(base), "RequesterNotAllowed")
    assert bank.address in e.message
    hospital.set_requester_allowed(c.datasets[hospital.address], bank.address, True)
    telecom.set_recipient_allowed(c.datasets[telecom.address], bank.address, False)
    _revert(lambda: bank.submit_task(base), "RecipientNotAllowed")
    telecom.set_recipient_allowed(c.datasets[telecom.address], bank.address, True)
    ids = base.dataset_ids
    _revert(lambda: bank.submit_task(dataclasses.replace(base, dataset_ids=[ids[0], ids[0]])), "DuplicateDataset")
    _revert(
        lambda: bank.submit_task(dataclasses.replace(base, participants=base.participants[:2])),
        "OwnerNotParticipant",
    )
    _revert(lambda: bank.submit_task(dataclasses.replace(base, deadline=1)), "DeadlineNotInFuture")
    _revert(lambda: bank.submit_task(dataclasses.replace(base, dataset_ids=[])), "InvalidDatasetCount")
    bank.deprecate_algorithm(c.algorithm)
    _revert(lambda: bank.submit_task(base), "AlgorithmIsDeprecated")
    assert bank.task_count() == 0  # nothing was half-written
    _revert(lambda: bank.task(1), "UnknownTask")


def test_policy_exhausted_at_authorisation_consumes_nothing(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=3, max_uses=1)
    bank, telecom, hospital = c.orgs
    first, _ = bank.submit_task(request_for(c))
    second, _ = bank.submit_task(request_for(c))  # allowed at submission: nothing consumed yet
    for org in c.orgs:
        org.approve(first, org.request_hash(first))
    bank.approve(second, bank.request_hash(second))
    telecom.approve(second, telecom.request_hash(second))
    before = {a: bank.dataset(d) for a, d in c.datasets.items()}
    e = _revert(lambda: hospital.approve(second, hospital.request_hash(second)), "UsesExhausted")
    assert "1 of its 1" in e.message
    assert {a: bank.dataset(d) for a, d in c.datasets.items()} == before
    t = bank.task(second)
    assert t.status is TaskStatus.PENDING and t.approvals == 2  # the failed approval left no trace


def test_privacy_budget_is_never_exceeded(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2, epsilon_total=1.0)
    e = _revert(lambda: c.orgs[0].submit_task(request_for(c, epsilon=1.5)), "PrivacyBudgetExceeded")
    assert "1.5" in e.message and "budget 1" in e.message
    a, _ = c.orgs[0].submit_task(request_for(c, epsilon=0.6))
    b, _ = c.orgs[0].submit_task(request_for(c, epsilon=0.6))
    for org in c.orgs:
        org.approve(a, org.request_hash(a))
    c.orgs[0].approve(b, c.orgs[0].request_hash(b))
    _revert(lambda: c.orgs[1].approve(b, c.orgs[1].request_hash(b)), "PrivacyBudgetExceeded")
    for ds in c.datasets.values():
        assert c.admin.dataset(ds).epsilon_spent == epsilon_to_fixed(0.6)


def test_expired_policy_and_limits_below_consumption(deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=2)
    bank = c.orgs[0]
    ds = c.datasets[bank.address]
    task, _ = bank.submit_task(request_for(c))
    for org in c.orgs:
        org.approve(task, org.request_hash(task))
    _revert(lambda: bank.set_policy_limits(ds, PolicyLimits(0, 2**63, 10**9)), "PolicyBelowConsumption")
    bank.set_policy_limits(ds, PolicyLimits(5, bank.block_timestamp() + 60, epsilon_to_fixed(5)))
    rpc_call(devnet.rpc_url, "evm_increaseTime", [61])
    rpc_call(devnet.rpc_url, "evm_mine")
    _revert(lambda: bank.submit_task(request_for(c)), "PolicyExpired")


def test_new_dataset_version_blocks_authorisation_of_older_tasks(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    bank, telecom = c.orgs
    task, _ = bank.submit_task(request_for(c))
    version, _ = telecom.publish_version(c.datasets[telecom.address], Fingerprint(h("new"), h("schema"), h("m"), 7))
    assert version == 2
    assert bank.fingerprint(c.datasets[telecom.address], 1).merkle_root == h("root-1")  # old one stays visible
    bank.approve(task, bank.request_hash(task))
    e = _revert(lambda: telecom.approve(task, telecom.request_hash(task)), "DatasetVersionChanged")
    assert "version 1 to 2" in e.message
    _revert(
        lambda: bank.publish_version(c.datasets[telecom.address], Fingerprint(h("x"), h("s"), h("m"), 1)),
        "NotDatasetOwner",
    )


def test_eip712_approval_rejects_wrong_signer_replay_expiry_and_other_chain(deployment, snapshot, devnet):
    c = build_consortium(deployment, n_orgs=3)
    bank, telecom, hospital = c.orgs
    task, _ = bank.submit_task(request_for(c))
    later = bank.block_timestamp() + 600
    # signed by telecom but claiming to be the hospital's approval
    forged = dataclasses.replace(telecom.sign_approval(task, telecom.request_hash(task), later), owner=hospital.address)
    e = _revert(lambda: bank.approve_by_sig(forged), "InvalidApprovalSignature")
    assert hospital.address in e.message  # the recovered address is some unrelated key
    # a non-owner's genuine signature
    admin_sig = c.admin.sign_approval(task, c.admin.request_hash(task), later)
    _revert(lambda: bank.approve_by_sig(admin_sig), "NotAnApprover")
    # expired signature
    stale = hospital.sign_approval(task, hospital.request_hash(task), bank.block_timestamp() - 1)
    _revert(lambda: bank.approve_by_sig(stale), "ApprovalSignatureExpired")
    # a signature for the same contract address on another chain id
    other_chain = Ledger(dataclasses.replace(deployment, chain_id=1), account=hospital.account)
    foreign = other_chain.sign_approval(
        task, other_chain.request_hash(task), later, nonce=hospital.approval_nonce(hospital.address)
    )
    _revert(lambda: bank.approve_by_sig(foreign), "InvalidApprovalSignature")
    # the genuine one works once; replaying it fails on the used nonce
    good = hospital.sign_approval(task, hospital.request_hash(task), later)
    bank.approve_by_sig(good)
    assert bank.task_approvers(task)[hospital.address] is True
    task2, _ = bank.submit_task(request_for(c))
    replay = dataclasses.replace(good, task_id=task2)  # same nonce, other task: signature no longer matches
    _revert(lambda: bank.approve_by_sig(replay), "InvalidApprovalSignature")
    _revert(lambda: bank.approve_by_sig(good), "InvalidAccountNonce")
    _revert(lambda: hospital.approve(task, hospital.request_hash(task)), "AlreadyApproved")


def test_execution_errors_are_named(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=2)
    bank, telecom = c.orgs
    task, _ = bank.submit_task(request_for(c))
    _revert(lambda: bank.start(task), "InvalidTaskStatus")
    for org in c.orgs:
        org.approve(task, org.request_hash(task))
    outsider = Ledger(deployment, account=c.admin.account)
    _revert(lambda: outsider.start(task), "NotParticipant")
    from tests.helpers import receipt_for

    _revert(lambda: bank.submit_receipt(task, receipt_for(c, bank, h("r"))), "InvalidTaskStatus")
    bank.start(task)
    _revert(lambda: bank.start(task), "AlreadyStarted")
    _revert(lambda: telecom.submit_receipt(task, receipt_for(c, telecom, h("r"))), "NotStarted")
    bad_times = dataclasses.replace(receipt_for(c, bank, h("r")), started_at=10, finished_at=5)
    _revert(lambda: bank.submit_receipt(task, bad_times), "InvalidReceiptTimes")
    bank.submit_receipt(task, receipt_for(c, bank, h("r")))
    _revert(lambda: bank.submit_receipt(task, receipt_for(c, bank, h("r"))), "AlreadyFinished")
    assert bank.participant_state(task, bank.address) is ParticipantState.RECEIPTED


def test_membership_errors(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    _revert(lambda: c.admin.admit(org.address, "again", h("k"), "http://x"), "OrganisationAlreadyAdmitted")
    _revert(lambda: c.admin.admit("0x" + "12" * 20, "", h("k"), "http://x"), "InvalidOrganisationName")
    _revert(lambda: c.admin.admit("0x" + "12" * 20, "n", b"\0" * 32, "http://x"), "InvalidEncryptionKey")
    e = _revert(lambda: org.suspend(org.address), "AccessControlUnauthorizedAccount")
    assert "admin" in e.message
    c.admin.suspend(org.address)
    _revert(lambda: c.admin.suspend(org.address), "OrganisationAlreadySuspended")
    assert c.admin.organisation(org.address).status is OrgStatus.SUSPENDED
    _revert(lambda: org.update_endpoint("http://new"), "OrganisationNotActive")
    _revert(lambda: org.anchor_log(1, h("head")), "OrganisationNotActive")


def test_audit_anchor_sequence_must_increase(deployment, snapshot):
    c = build_consortium(deployment, n_orgs=1)
    org = c.orgs[0]
    assert org.latest_anchor(org.address) is None
    org.anchor_log(5, h("head5"))
    _revert(lambda: org.anchor_log(5, h("again")), "SequenceNotIncreasing")
    org.anchor_log(9, h("head9"))
    a = org.latest_anchor(org.address)
    assert (a.sequence, a.head_hash, a.count) == (9, h("head9"), 2)


def test_every_contract_error_has_a_human_message(deployment):
    names = ErrorDecoder(ci.abi for ci in deployment.contracts.values()).error_names()
    missing = sorted(names - set(MESSAGES))
    assert not missing, f"add messages for {missing} in pcn/chain/errors.py"


def _solidity_enum(name: str) -> list[str]:
    text = (paths.contracts_dir() / "src" / "PcnTypes.sol").read_text()
    body = re.search(r"enum\s+" + name + r"\s*\{([^}]*)\}", text)
    assert body, name
    return [m.strip() for m in body.group(1).split(",") if m.strip()]


@pytest.mark.parametrize(
    "sol_name,py_enum",
    [
        ("RefusalReason", RefusalReason),
        ("TaskStatus", TaskStatus),
        ("OrgStatus", OrgStatus),
        ("ParticipantState", ParticipantState),
    ],
)
def test_python_enums_mirror_solidity(sol_name, py_enum):
    sol = _solidity_enum(sol_name)
    snake = [re.sub(r"(?<!^)(?=[A-Z])", "_", s).upper() for s in sol]
    assert [m.name for m in py_enum] == snake
    assert [m.value for m in py_enum] == list(range(len(sol)))


def test_owner_task_rules_dp_floor_ceiling_and_participant_allow_list(deployment, snapshot):
    """#13.6 (a), on a real anvil: a DP-only dataset refuses a task without ε at submission,
    a ceiling caps ε, and a participant the owner did not list blocks authorisation."""
    c = build_consortium(deployment)
    bank, telecom, hospital = c.orgs
    ds = c.datasets[telecom.address]
    _revert(lambda: bank.set_task_rules(ds, TaskRules(epsilon_floor=2, epsilon_ceiling=1)), "NotDatasetOwner")
    _revert(lambda: telecom.set_task_rules(ds, TaskRules(epsilon_floor=2, epsilon_ceiling=1)), "InvalidTaskRules")
    rules = TaskRules(epsilon_to_fixed(0.25), epsilon_to_fixed(1.0), 0, True)
    telecom.set_task_rules(ds, rules)
    assert telecom.task_rules(ds) == rules
    e = _revert(lambda: bank.submit_task(request_for(c, epsilon=0.0)), "EpsilonBelowFloor")
    assert "DP-only" in e.message
    _revert(lambda: bank.submit_task(request_for(c, epsilon=1.5)), "EpsilonAboveCeiling")

    telecom.set_participant_allowed(ds, bank.address)
    telecom.set_participant_allowed(ds, telecom.address)
    task, _ = bank.submit_task(request_for(c, epsilon=0.5))  # hospital is not on telecom's list
    bank.approve(task, bank.computed_request_hash(task))
    telecom.approve(task, telecom.computed_request_hash(task))
    e = _revert(lambda: hospital.approve(task, hospital.computed_request_hash(task)), "ParticipantNotAllowed")
    assert hospital.address in e.message
    assert bank.task(task).status is TaskStatus.PENDING and bank.dataset(ds).uses == 0
    res = telecom.set_participant_allowed(ds, hospital.address)
    assert res.event("PolicyParticipantSet").args["allowed"] is True
    hospital.approve(task, hospital.computed_request_hash(task))
    assert bank.task(task).status is TaskStatus.AUTHORISED


def test_submit_task_refuses_parameters_the_algorithm_would_refuse(deployment, snapshot):
    """The rule lives in `operations.submit_task`, not only in the CLI: whoever submits through
    it (the demo, scripts, tests) cannot put a task on chain that every node would refuse."""
    from pcn.runtime import operations

    c = build_consortium(deployment)
    ids = list(c.datasets.values())
    before = c.admin.task_count()
    submit = functools.partial(
        operations.submit_task, c.org(0), dataset_ids=ids, recipient=c.org(0).address, push=False
    )
    for algorithm in ("stats", "0x" + c.algorithm.hex()):  # by name, and by code hash (kind read on chain)
        with pytest.raises(operations.InvalidParameters, match=r"not valid for stats: .*'column'"):
            submit(algorithm=algorithm, params={"column": 5})
    assert c.admin.task_count() == before  # nothing reached the chain
    submit(algorithm="0x" + c.algorithm.hex(), params={"column": "income", "statistics": ["count"]})
    assert c.admin.task_count() == before + 1


def test_a_task_deadline_counts_from_the_next_block_not_a_stale_latest_one(deployment, snapshot, devnet):
    """On a chain that mines on demand the latest block can be minutes old. A deadline counted
    from it passed gas estimation and then reverted when mined (seen under load: `pcn task
    submit --deadline 60` failed with an undecodable revert)."""
    from pcn.runtime import operations

    c = build_consortium(deployment)
    rpc_call(devnet.rpc_url, "evm_increaseTime", [120])  # the next block is 120 s after the latest
    sub = operations.submit_task(
        c.org(0),
        algorithm="0x" + c.algorithm.hex(),
        dataset_ids=list(c.datasets.values()),
        params={"column": "income", "statistics": ["count"]},
        recipient=c.org(0).address,
        deadline_in=60,
        push=False,
    )
    task = c.admin.task(sub.task_id)
    mined_at = c.admin.block_timestamp()
    assert mined_at < task.deadline <= mined_at + 60
