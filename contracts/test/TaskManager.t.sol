// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {DatasetRegistry} from "../src/DatasetRegistry.sol";
import {AlgorithmRegistry} from "../src/AlgorithmRegistry.sol";
import {Consortium} from "../src/Consortium.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

contract TaskManagerTest is PcnFixture {
    bytes32 internal constant STATS = keccak256("pcn/algorithms/stats@1.0.0");
    bytes32 internal constant DETAIL = keccak256("refusal detail");

    function _assertStatus(uint256 id, PcnTypes.TaskStatus s) internal view {
        assertEq(uint8(_status(id)), uint8(s), "task status");
    }

    function _assertPState(uint256 id, address p, PcnTypes.ParticipantState s) internal view {
        assertEq(uint8(_pstate(id, p)), uint8(s), "participant state");
    }

    function _expectStatusRevert(uint256 id, PcnTypes.TaskStatus s) internal {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidTaskStatus.selector, id, s));
    }

    function _assertConsumption(uint64 usesA, uint64 usesB, uint64 usesC, uint64 spentA, uint64 spentB, uint64 spentC)
        internal
        view
    {
        assertEq(_uses(dsA), usesA, "uses A");
        assertEq(_uses(dsB), usesB, "uses B");
        assertEq(_uses(dsC), usesC, "uses C");
        assertEq(_spent(dsA), spentA, "spent A");
        assertEq(_spent(dsB), spentB, "spent B");
        assertEq(_spent(dsC), spentC, "spent C");
    }

    // ================================================================== wiring

    function test_constructor_wiring() public view {
        assertEq(address(tm.consortium()), address(consortium));
        assertEq(address(tm.algorithms()), address(algos));
        assertEq(address(tm.datasets()), address(datasets));
        assertEq(tm.APPROVAL_TYPEHASH(), APPROVAL_TYPEHASH);
        assertEq(tm.taskCount(), 0);
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = tm.eip712Domain();
        assertEq(name, "pcn TaskManager");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifying, address(tm));
    }

    // ================================================================== submit

    function test_submit_recordsTaskAndEmits() public {
        vm.warp(T0 + 60);
        TaskManager.TaskRequest memory r = _stdRequest();
        uint32[] memory versions = new uint32[](3);
        versions[0] = 1;
        versions[1] = 1;
        versions[2] = 1;

        vm.expectEmit(true, true, true, true, address(tm));
        emit TaskManager.TaskSubmitted(
            1, dave, ALGO, r.datasetIds, versions, r.participants, PARAMS, dave, T0 + 60 + TASK_TTL, EPS
        );
        uint256 id = _submit(dave, r);
        assertEq(id, 1);
        assertEq(tm.taskCount(), 1);

        TaskManager.Task memory t = tm.task(id);
        assertEq(t.requester, dave);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Pending));
        assertEq(t.requiredApprovals, 3);
        assertEq(t.approvals, 0);
        assertEq(t.startedCount, 0);
        assertEq(t.receiptCount, 0);
        assertEq(uint8(t.refusalReason), uint8(PcnTypes.RefusalReason.None));
        assertEq(t.resultRecipient, dave);
        assertEq(t.deadline, T0 + 60 + TASK_TTL);
        assertEq(t.epsilon, EPS);
        assertEq(t.createdAt, T0 + 60);
        assertEq(t.authorisedAt, 0);
        assertEq(t.algorithmHash, ALGO);
        assertEq(t.paramsHash, PARAMS);
        assertEq(t.resultHash, bytes32(0));

        (uint256[] memory ids, uint32[] memory vs) = tm.taskDatasets(id);
        assertEq(ids, r.datasetIds);
        assertEq(vs.length, 3);
        assertEq(vs[0], 1);
        assertEq(tm.taskParticipants(id), r.participants);
        (address[] memory owners, bool[] memory approved) = tm.taskApprovers(id);
        assertEq(owners, _addrs(alice, bob, carol));
        assertEq(approved.length, 3);
        assertFalse(approved[0] || approved[1] || approved[2]);
        _assertPState(id, alice, PcnTypes.ParticipantState.Invited);
        _assertPState(id, dave, PcnTypes.ParticipantState.None);
        // nothing is consumed at submission
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_submit_pinsCurrentDatasetVersion() public {
        vm.prank(bob);
        datasets.publishVersion(dsB, _fp("B-v2"));
        uint256 id = _submitStd();
        (, uint32[] memory vs) = tm.taskDatasets(id);
        assertEq(vs[0], 1);
        assertEq(vs[1], 2);
        assertEq(vs[2], 1);
        _approveAll(id);
        _assertStatus(id, PcnTypes.TaskStatus.Authorised);
    }

    function test_submit_sequentialIds() public {
        assertEq(_submitStd(), 1);
        assertEq(_submitStd(), 2);
        assertEq(_submit(alice, _request(_ids(dsA), _addrs(alice), 0)), 3);
        assertEq(tm.taskCount(), 3);
    }

    function test_submit_ownerOfSeveralDatasetsApprovesOnce() public {
        uint256 dsA2 = _registerDataset(alice, 10, 10 * EPS, "A2");
        uint256 id = _submit(dave, _request(_ids(dsA, dsA2, dsB), _addrs(alice, bob), EPS));
        assertEq(tm.task(id).requiredApprovals, 2);
        (address[] memory owners,) = tm.taskApprovers(id);
        assertEq(owners, _addrs(alice, bob));
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        _assertStatus(id, PcnTypes.TaskStatus.Authorised);
        assertEq(_uses(dsA), 1);
        assertEq(_uses(dsA2), 1);
        assertEq(_spent(dsA2), EPS);
        assertEq(_uses(dsB), 1);
        assertEq(_uses(dsC), 0);
    }

    function test_submit_nonOwnerParticipantMustRunButNotApprove() public {
        uint256 id = _submit(dave, _request(_ids(dsA, dsB, dsC), _addrs(alice, bob, carol), EPS));
        // dave is the requester, not a participant
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotAnApprover.selector, id, dave));
        vm.prank(dave);
        tm.approve(id, _rh(id));

        uint256 id2 = _submit(alice, _request(_ids(dsA), _addrs(alice, dave), 0));
        assertEq(tm.task(id2).requiredApprovals, 1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotAnApprover.selector, id2, dave));
        vm.prank(dave);
        tm.approve(id2, _rh(id2));
        _approveAll(id2);
        _startAll(id2);
        _submitReceipt(id2, alice, RESULT, ALGO);
        _assertStatus(id2, PcnTypes.TaskStatus.Running); // dave's receipt is still due
        _submitReceipt(id2, dave, RESULT, ALGO);
        _assertStatus(id2, PcnTypes.TaskStatus.Completed);
    }

    function test_submit_requesterNotActiveReverts() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        tm.submit(r);
    }

    function test_submit_suspendedRequesterReverts() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        _suspend(dave);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, dave));
        vm.prank(dave);
        tm.submit(r);
        assertEq(tm.taskCount(), 0);
    }

    function test_submit_recipientNotActiveReverts() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = outsider;
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_unknownAlgorithmReverts() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.algorithmHash = STATS;
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.UnknownAlgorithm.selector, STATS));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_deprecatedAlgorithmReverts() public {
        vm.prank(alice);
        algos.deprecate(ALGO);
        TaskManager.TaskRequest memory r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmIsDeprecated.selector, ALGO));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_datasetCountBounds() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.datasetIds = new uint256[](0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidDatasetCount.selector, 0));
        vm.prank(dave);
        tm.submit(r);

        r.datasetIds = new uint256[](9);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidDatasetCount.selector, 9));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_participantCountBounds() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.participants = new address[](0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidParticipantCount.selector, 0));
        vm.prank(dave);
        tm.submit(r);

        r.participants = new address[](17);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidParticipantCount.selector, 17));
        vm.prank(dave);
        tm.submit(r);
    }

    /// 8 datasets and 16 participants are the inclusive maxima.
    function test_submit_maximumSizesAccepted() public {
        address[] memory parts = new address[](16);
        parts[0] = alice;
        parts[1] = bob;
        parts[2] = carol;
        parts[3] = dave;
        for (uint256 i = 4; i < 16; ++i) {
            parts[i] = makeAddr(string(abi.encodePacked("org", vm.toString(i))));
            _admit(parts[i], "extra org");
        }
        uint256[] memory ids = new uint256[](8);
        ids[0] = dsA;
        ids[1] = dsB;
        ids[2] = dsC;
        for (uint256 i = 3; i < 8; ++i) {
            ids[i] = _registerDataset(alice, 10, 10 * EPS, vm.toString(i));
        }
        uint256 id = _submit(dave, _request(ids, parts, EPS));
        TaskManager.Task memory t = tm.task(id);
        assertEq(t.requiredApprovals, 3);
        _approveAll(id);
        _startAll(id);
        assertEq(tm.task(id).startedCount, 16);
        _receiptAll(id, RESULT);
        _assertStatus(id, PcnTypes.TaskStatus.Completed);
        assertEq(tm.task(id).receiptCount, 16);
        assertEq(_uses(ids[7]), 1);
    }

    function test_submit_deadlineNotInFutureReverts() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.deadline = uint64(block.timestamp);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.DeadlineNotInFuture.selector, uint64(block.timestamp)));
        vm.prank(dave);
        tm.submit(r);

        r.deadline = uint64(block.timestamp) - 1;
        vm.expectRevert(abi.encodeWithSelector(TaskManager.DeadlineNotInFuture.selector, uint64(block.timestamp) - 1));
        vm.prank(dave);
        tm.submit(r);

        r.deadline = uint64(block.timestamp) + 1;
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_participantNotActiveReverts() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA), _addrs(alice, outsider), EPS);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(dave);
        tm.submit(r);

        _suspend(bob);
        r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_duplicateParticipantReverts() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB), _addrs(alice, bob, alice), EPS);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.DuplicateParticipant.selector, alice));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_duplicateDatasetReverts() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB, dsA), _addrs(alice, bob), EPS);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.DuplicateDataset.selector, dsA));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_ownerNotParticipantReverts() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB, dsC), _addrs(alice, bob), EPS);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.OwnerNotParticipant.selector, dsC, carol));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_unknownDatasetReverts() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, 99), _addrs(alice, bob), EPS);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 99));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyDeniesAlgorithm() public {
        vm.prank(bob);
        algos.register(STATS, "stats", "1.0.0", bytes32(0));
        vm.prank(admin);
        algos.approve(STATS, false);
        vm.prank(alice);
        datasets.setAlgorithmAllowed(dsA, STATS, true); // A allows it, B does not
        TaskManager.TaskRequest memory r = _stdRequest();
        r.algorithmHash = STATS;
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.AlgorithmNotAllowed.selector, dsB, STATS));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyDeniesRequester() public {
        vm.prank(carol);
        datasets.setRequesterAllowed(dsC, dave, false);
        TaskManager.TaskRequest memory r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RequesterNotAllowed.selector, dsC, dave));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyDeniesRecipient() public {
        vm.prank(bob);
        datasets.setRecipientAllowed(dsB, carol, false);
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = carol;
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RecipientNotAllowed.selector, dsB, carol));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyExpired() public {
        vm.warp(POLICY_EXPIRY + 1);
        TaskManager.TaskRequest memory r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyExpired.selector, dsA, POLICY_EXPIRY));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyUsesExhausted() public {
        _setLimits(dsB, 0, DEFAULT_EPS_TOTAL);
        TaskManager.TaskRequest memory r = _stdRequest();
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsB, uint64(0), uint64(0)));
        vm.prank(dave);
        tm.submit(r);
    }

    function test_submit_policyBudgetExceeded() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.epsilon = DEFAULT_EPS_TOTAL + 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                DatasetRegistry.PrivacyBudgetExceeded.selector, dsA, uint64(0), DEFAULT_EPS_TOTAL + 1, DEFAULT_EPS_TOTAL
            )
        );
        vm.prank(dave);
        tm.submit(r);
    }

    // ================================================================== approve

    function test_approve_emitsAndCounts() public {
        uint256 id = _submitStd();
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskApproved(id, alice, alice);
        vm.prank(alice);
        tm.approve(id, _rh(id));

        TaskManager.Task memory t = tm.task(id);
        assertEq(t.approvals, 1);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Pending));
        (, bool[] memory approved) = tm.taskApprovers(id);
        assertTrue(approved[0]);
        assertFalse(approved[1]);
        assertFalse(approved[2]);
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_approve_lastApprovalAuthorisesAndConsumes() public {
        uint256 id = _submitStd();
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        vm.warp(T0 + 30);

        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskApproved(id, carol, carol);
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetRegistry.DatasetUsed(dsA, id, 1, EPS);
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetRegistry.DatasetUsed(dsB, id, 1, EPS);
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetRegistry.DatasetUsed(dsC, id, 1, EPS);
        vm.expectEmit(true, false, false, true, address(tm));
        emit TaskManager.TaskAuthorised(id);
        vm.prank(carol);
        tm.approve(id, _rh(id));

        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Authorised));
        assertEq(t.approvals, 3);
        assertEq(t.authorisedAt, T0 + 30);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
    }

    function test_approve_unknownTaskReverts() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 42));
        vm.prank(alice);
        tm.approve(42, _rh(42));
    }

    function test_approve_notApproverReverts() public {
        uint256 id = _submitStd();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotAnApprover.selector, id, outsider));
        vm.prank(outsider);
        tm.approve(id, _rh(id));
    }

    function test_approve_twiceReverts() public {
        uint256 id = _submitStd();
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyApproved.selector, id, alice));
        vm.prank(alice);
        tm.approve(id, _rh(id));
        assertEq(tm.task(id).approvals, 1);
    }

    function test_approve_afterAuthorisedReverts() public {
        uint256 id = _authorisedStd();
        _expectStatusRevert(id, PcnTypes.TaskStatus.Authorised);
        vm.prank(alice);
        tm.approve(id, _rh(id));
    }

    function test_approve_deadlineBoundary() public {
        uint256 id = _submitStd();
        uint64 deadline = tm.task(id).deadline;
        vm.warp(deadline);
        vm.prank(alice);
        tm.approve(id, _rh(id)); // at the deadline: still fine
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskDeadlinePassed.selector, id, deadline));
        vm.prank(bob);
        tm.approve(id, _rh(id));
    }

    function test_approve_suspendedOwnerReverts() public {
        uint256 id = _submitStd();
        _suspend(bob);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        assertEq(tm.task(id).approvals, 0);
        _reinstate(bob);
        vm.prank(bob);
        tm.approve(id, _rh(id));
        assertEq(tm.task(id).approvals, 1);
    }

    // ================================================================== authorisation failures

    function _approveAliceBob(uint256 id) internal {
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
    }

    function _assertStillPendingAfterFailedAuthorisation(uint256 id) internal view {
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Pending));
        assertEq(t.approvals, 2);
        assertEq(t.authorisedAt, 0);
        (, bool[] memory approved) = tm.taskApprovers(id);
        assertFalse(approved[2], "carol's approval rolled back");
    }

    function test_authorise_datasetVersionChanged() public {
        uint256 id = _submitStd();
        _approveAliceBob(id);
        vm.prank(bob);
        datasets.publishVersion(dsB, _fp("B-v2"));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.DatasetVersionChanged.selector, dsB, uint32(1), uint32(2)));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStillPendingAfterFailedAuthorisation(id);
        _assertConsumption(0, 0, 0, 0, 0, 0); // dsA was consumed before dsB failed: rolled back
    }

    /// The second dataset's policy is tightened to zero uses after submission: the final
    /// approval reverts and nothing is consumed on any dataset, including the first.
    function test_authorise_usesExhaustedOnSecondDataset_consumesNothing() public {
        uint256 id = _submitStd();
        _approveAliceBob(id);
        _setLimits(dsB, 0, DEFAULT_EPS_TOTAL);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsB, uint64(0), uint64(0)));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStillPendingAfterFailedAuthorisation(id);
        _assertConsumption(0, 0, 0, 0, 0, 0);

        // once bob raises the limit, the same approval goes through
        _setLimits(dsB, 1, DEFAULT_EPS_TOTAL);
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStatus(id, PcnTypes.TaskStatus.Authorised);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
    }

    /// Two tasks compete for the last use of dsB: both pass submission, only the first to be
    /// authorised gets it, and the second's failure leaves dsA and dsC at one use.
    function test_authorise_competingTasks_usesExhausted_consumesNothing() public {
        _setLimits(dsB, 1, DEFAULT_EPS_TOTAL);
        uint256 first = _submitStd();
        uint256 second = _submitStd();
        _approveAll(first);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);

        _approveAliceBob(second);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsB, uint64(1), uint64(1)));
        vm.prank(carol);
        tm.approve(second, _rh(second));
        _assertStillPendingAfterFailedAuthorisation(second);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
    }

    function test_authorise_budgetExceededOnSecondDataset_consumesNothing() public {
        _setLimits(dsB, DEFAULT_MAX_USES, 5 * EPS);
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB, dsC), _addrs(alice, bob, carol), 3 * EPS);
        uint256 first = _submit(dave, r);
        uint256 second = _submit(dave, r);
        _approveAll(first);
        _assertConsumption(1, 1, 1, 3 * EPS, 3 * EPS, 3 * EPS);

        _approveAliceBob(second);
        vm.expectRevert(
            abi.encodeWithSelector(DatasetRegistry.PrivacyBudgetExceeded.selector, dsB, 3 * EPS, 3 * EPS, 5 * EPS)
        );
        vm.prank(carol);
        tm.approve(second, _rh(second));
        _assertStillPendingAfterFailedAuthorisation(second);
        _assertConsumption(1, 1, 1, 3 * EPS, 3 * EPS, 3 * EPS);
    }

    function test_authorise_policyExpired() public {
        uint256 id = _submitStd();
        _approveAliceBob(id);
        vm.prank(bob);
        datasets.setPolicyLimits(
            dsB, DatasetRegistry.PolicyLimits({maxUses: 10, expiry: T0 + 1 hours, epsilonTotal: 10 * EPS})
        );
        vm.warp(T0 + 2 hours);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyExpired.selector, dsB, T0 + 1 hours));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_authorise_grantRevoked() public {
        uint256 id = _submitStd();
        _approveAliceBob(id);

        vm.prank(carol);
        datasets.setAlgorithmAllowed(dsC, ALGO, false);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.AlgorithmNotAllowed.selector, dsC, ALGO));
        vm.prank(carol);
        tm.approve(id, _rh(id));

        vm.prank(carol);
        datasets.setAlgorithmAllowed(dsC, ALGO, true);
        vm.prank(bob);
        datasets.setRequesterAllowed(dsB, dave, false);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RequesterNotAllowed.selector, dsB, dave));
        vm.prank(carol);
        tm.approve(id, _rh(id));

        vm.prank(bob);
        datasets.setRequesterAllowed(dsB, dave, true);
        vm.prank(bob);
        datasets.setRecipientAllowed(dsB, dave, false);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RecipientNotAllowed.selector, dsB, dave));
        vm.prank(carol);
        tm.approve(id, _rh(id));

        _assertStillPendingAfterFailedAuthorisation(id);
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_authorise_algorithmDeprecated() public {
        uint256 id = _submitStd();
        _approveAliceBob(id);
        vm.prank(admin);
        algos.deprecate(ALGO);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmIsDeprecated.selector, ALGO));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStillPendingAfterFailedAuthorisation(id);
    }

    function test_authorise_requesterSuspended() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = alice;
        uint256 id = _submit(dave, r);
        _approveAliceBob(id);
        _suspend(dave);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, dave));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStillPendingAfterFailedAuthorisation(id);
    }

    function test_authorise_recipientSuspended() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = alice;
        uint256 id = _submit(dave, r);
        _approveAliceBob(id);
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        _assertStillPendingAfterFailedAuthorisation(id);
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    // ================================================================== approveBySig

    function test_approvalDigest_matchesIndependentComputation() public {
        uint256 id = _submitStd();
        assertEq(tm.approvalDigest(id, _rh(id), bob, 0, T0 + 1 hours), _approvalDigest(id, bob, 0, T0 + 1 hours));
        assertEq(
            tm.approvalDigest(7, _rh(7), carol, 3, type(uint256).max), _approvalDigest(7, carol, 3, type(uint256).max)
        );
        assertTrue(tm.approvalDigest(id, _rh(id), bob, 0, T0) != tm.approvalDigest(id, _rh(id), bob, 1, T0));
        assertTrue(tm.approvalDigest(id, _rh(id), bob, 0, T0) != tm.approvalDigest(id, _rh(id), carol, 0, T0));
        assertTrue(tm.approvalDigest(id, _rh(id), bob, 0, T0) != tm.approvalDigest(id + 1, _rh(id + 1), bob, 0, T0));
        assertTrue(tm.approvalDigest(id, _rh(id), bob, 0, T0) != tm.approvalDigest(id, _rh(id), bob, 0, T0 + 1));
    }

    function test_approveBySig_relayedApproval() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, 0, deadline);
        assertEq(tm.nonces(bob), 0);

        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskApproved(id, bob, outsider);
        vm.prank(outsider); // any relayer, even a non-member
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);

        assertEq(tm.nonces(bob), 1);
        assertEq(tm.task(id).approvals, 1);
        (, bool[] memory approved) = tm.taskApprovers(id);
        assertTrue(approved[1]);
    }

    function test_approveBySig_replayReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, 0, deadline);
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        vm.expectRevert(abi.encodeWithSelector(Nonces.InvalidAccountNonce.selector, bob, 1));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        assertEq(tm.nonces(bob), 1);
    }

    /// A nonce-0 signature prepared for a second task is void once nonce 0 was used elsewhere.
    function test_approveBySig_nonceSharedAcrossTasks() public {
        uint256 first = _submitStd();
        uint256 second = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sigFirst = _signApproval(bobKey, first, bob, 0, deadline);
        bytes memory sigSecond = _signApproval(bobKey, second, bob, 0, deadline);
        tm.approveBySig(first, _rh(first), bob, 0, deadline, sigFirst);
        vm.expectRevert(abi.encodeWithSelector(Nonces.InvalidAccountNonce.selector, bob, 1));
        tm.approveBySig(second, _rh(second), bob, 0, deadline, sigSecond);
        // the right nonce works
        tm.approveBySig(second, _rh(second), bob, 1, deadline, _signApproval(bobKey, second, bob, 1, deadline));
        assertEq(tm.nonces(bob), 2);
    }

    function test_approveBySig_futureNonceReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, 5, deadline);
        vm.expectRevert(abi.encodeWithSelector(Nonces.InvalidAccountNonce.selector, bob, 0));
        tm.approveBySig(id, _rh(id), bob, 5, deadline, sig);
    }

    function test_approveBySig_wrongSignerReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(carolKey, id, bob, 0, deadline); // carol signs "bob approves"
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, carol));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        assertEq(tm.nonces(bob), 0);
        assertEq(tm.task(id).approvals, 0);
    }

    function test_approveBySig_signatureForOtherTaskReverts() public {
        uint256 first = _submitStd();
        uint256 second = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(bobKey, _approvalDigest(first, bob, 0, deadline));
        address recovered = ecrecover(_approvalDigest(second, bob, 0, deadline), v, r, s);
        assertTrue(recovered != bob);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, recovered));
        tm.approveBySig(second, _rh(second), bob, 0, deadline, abi.encodePacked(r, s, v));
    }

    function test_approveBySig_expiredSignatureReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 10;
        bytes memory sig = _signApproval(bobKey, id, bob, 0, deadline);
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ApprovalSignatureExpired.selector, deadline));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        vm.warp(deadline); // at the deadline the signature is still valid
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        assertEq(tm.task(id).approvals, 1);
    }

    function test_approveBySig_otherChainIdRejected() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 digestHere = _approvalDigest(id, bob, 0, deadline);
        assertEq(digestHere, tm.approvalDigest(id, _rh(id), bob, 0, deadline));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(bobKey, digestHere);

        vm.chainId(block.chainid + 1000);
        bytes32 digestThere = _approvalDigest(id, bob, 0, deadline);
        assertTrue(digestThere != digestHere);
        assertEq(tm.approvalDigest(id, _rh(id), bob, 0, deadline), digestThere, "domain follows chain id");
        address recovered = ecrecover(digestThere, v, r, s);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, recovered));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, s, v));

        // a signature made for this chain id is accepted
        tm.approveBySig(id, _rh(id), bob, 0, deadline, _sign(bobKey, digestThere));
        assertEq(tm.task(id).approvals, 1);
    }

    function test_approveBySig_otherVerifyingContractRejected() public {
        TaskManager other = new TaskManager(consortium, algos, datasets);
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 otherDigest = other.approvalDigest(id, _rh(id), bob, 0, deadline);
        assertTrue(otherDigest != tm.approvalDigest(id, _rh(id), bob, 0, deadline));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(bobKey, otherDigest);
        address recovered = ecrecover(tm.approvalDigest(id, _rh(id), bob, 0, deadline), v, r, s);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, recovered));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, s, v));
    }

    function test_approveBySig_malformedSignaturesReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(bobKey, _approvalDigest(id, bob, 0, deadline));

        // 64-byte (ERC-2098) signatures are not accepted
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, address(0)));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, s));

        // the malleable twin (s' = n - s, v flipped) is rejected
        bytes32 sHigh = bytes32(SECP256K1_N - uint256(s));
        uint8 vFlipped = v == 27 ? 28 : 27;
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, address(0)));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, sHigh, vFlipped));

        // an invalid v recovers nothing
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, address(0)));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, s, uint8(0)));

        // a zero owner with garbage cannot pass as "recovered == owner"
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, address(0), address(0)));
        tm.approveBySig(id, _rh(id), address(0), 0, deadline, new bytes(65));

        assertEq(tm.task(id).approvals, 0);
        assertEq(tm.nonces(bob), 0);
    }

    function test_approveBySig_nonApproverReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(daveKey, id, dave, 0, deadline);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotAnApprover.selector, id, dave));
        tm.approveBySig(id, _rh(id), dave, 0, deadline, sig);
        assertEq(tm.nonces(dave), 0, "nonce not consumed on revert");
    }

    function test_approveBySig_suspendedOwnerReverts() public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, 0, deadline);
        _suspend(bob);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        assertEq(tm.nonces(bob), 0);
    }

    function test_approveBySig_afterDirectApprovalReverts() public {
        uint256 id = _submitStd();
        vm.prank(bob);
        tm.approve(id, _rh(id));
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, 0, deadline);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyApproved.selector, id, bob));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
    }

    // ================================================================== full lifecycle

    function test_lifecycle_threeParties_completed() public {
        // submit
        uint256 id = _submitStd();
        _assertStatus(id, PcnTypes.TaskStatus.Pending);

        // approve by alice and bob directly
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        _assertStatus(id, PcnTypes.TaskStatus.Pending);

        // carol approves by EIP-712 signature, relayed by dave
        uint256 deadline = block.timestamp + 1 hours;
        uint256 nonce = tm.nonces(carol);
        bytes32 digest = _approvalDigest(id, carol, nonce, deadline);
        assertEq(digest, tm.approvalDigest(id, _rh(id), carol, nonce, deadline), "EIP-712 digest");
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(carolKey, digest);
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskApproved(id, carol, dave);
        vm.expectEmit(true, false, false, true, address(tm));
        emit TaskManager.TaskAuthorised(id);
        vm.prank(dave);
        tm.approveBySig(id, _rh(id), carol, nonce, deadline, abi.encodePacked(r, s, v));
        _assertStatus(id, PcnTypes.TaskStatus.Authorised);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);

        // start x3
        address[3] memory parts = [alice, bob, carol];
        for (uint256 i = 0; i < 3; ++i) {
            vm.expectEmit(true, true, false, true, address(tm));
            emit TaskManager.TaskStarted(id, parts[i]);
            vm.prank(parts[i]);
            tm.start(id);
            _assertStatus(id, PcnTypes.TaskStatus.Running);
            _assertPState(id, parts[i], PcnTypes.ParticipantState.Started);
            assertEq(tm.task(id).startedCount, i + 1);
        }

        // receipts x3
        vm.warp(block.timestamp + 10 minutes);
        for (uint256 i = 0; i < 3; ++i) {
            TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
            rc.startedAt = uint64(block.timestamp) - 10 minutes;
            rc.transcriptHash = keccak256(abi.encode("transcript", i));
            vm.expectEmit(true, true, false, true, address(tm));
            emit TaskManager.ReceiptSubmitted(
                id,
                parts[i],
                RESULT,
                rc.transcriptHash,
                rc.inputFingerprint,
                ALGO,
                rc.deletionHash,
                rc.startedAt,
                rc.finishedAt
            );
            if (i == 2) {
                vm.expectEmit(true, false, false, true, address(tm));
                emit TaskManager.TaskCompleted(id, RESULT);
            }
            vm.prank(parts[i]);
            tm.submitReceipt(id, rc);
            _assertPState(id, parts[i], PcnTypes.ParticipantState.Receipted);
            TaskManager.Receipt memory stored = tm.receipt(id, parts[i]);
            assertEq(stored.transcriptHash, rc.transcriptHash);
            assertEq(stored.startedAt, rc.startedAt);
            assertEq(stored.resultHash, RESULT);
            if (i < 2) _assertStatus(id, PcnTypes.TaskStatus.Running);
        }

        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Completed));
        assertEq(t.resultHash, RESULT);
        assertEq(t.receiptCount, 3);
        assertEq(t.startedCount, 3);
        assertEq(t.approvals, 3);

        // terminal: nothing else moves it
        _expectStatusRevert(id, PcnTypes.TaskStatus.Completed);
        vm.prank(dave);
        tm.cancel(id);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Completed);
        vm.prank(alice);
        tm.refuse(id, uint8(PcnTypes.RefusalReason.ProtocolFailure), DETAIL);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Completed);
        vm.prank(alice);
        tm.start(id);
        TaskManager.Receipt memory late = _receipt(RESULT, ALGO);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Completed);
        vm.prank(alice);
        tm.submitReceipt(id, late);
        vm.warp(t.deadline + 1);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Completed);
        tm.expire(id);
        // consumption is exactly one use and one epsilon per dataset
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
    }

    // ================================================================== disputed

    function _runWithReceipts(bytes32[3] memory results, bytes32[3] memory algosUsed) internal returns (uint256 id) {
        id = _runningStd();
        address[3] memory parts = [alice, bob, carol];
        for (uint256 i = 0; i < 3; ++i) {
            _submitReceipt(id, parts[i], results[i], algosUsed[i]);
        }
    }

    function test_disputed_whenLastResultDiffers() public {
        uint256 id = _runningStd();
        _submitReceipt(id, alice, RESULT, ALGO);
        _submitReceipt(id, bob, RESULT, ALGO);
        TaskManager.Receipt memory rc = _receipt(keccak256("other"), ALGO);
        vm.expectEmit(true, false, false, true, address(tm));
        emit TaskManager.TaskDisputed(id);
        vm.prank(carol);
        tm.submitReceipt(id, rc);
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Disputed));
        assertEq(t.resultHash, bytes32(0));
        assertEq(t.receiptCount, 3);
    }

    function test_disputed_whenFirstResultDiffers() public {
        uint256 id = _runWithReceipts([keccak256("odd"), RESULT, RESULT], [ALGO, ALGO, ALGO]);
        _assertStatus(id, PcnTypes.TaskStatus.Disputed);
        assertEq(tm.task(id).resultHash, bytes32(0));
    }

    function test_disputed_whenOneAlgorithmHashDiffers() public {
        uint256 id = _runWithReceipts([RESULT, RESULT, RESULT], [ALGO, STATS, ALGO]);
        _assertStatus(id, PcnTypes.TaskStatus.Disputed);
    }

    function test_disputed_whenAllAgreeOnWrongAlgorithm() public {
        uint256 id = _runWithReceipts([RESULT, RESULT, RESULT], [STATS, STATS, STATS]);
        _assertStatus(id, PcnTypes.TaskStatus.Disputed);
    }

    function test_disputed_isTerminal() public {
        uint256 id = _runWithReceipts([RESULT, RESULT, keccak256("x")], [ALGO, ALGO, ALGO]);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Disputed);
        vm.prank(alice);
        tm.refuse(id, 1, DETAIL);
        vm.warp(tm.task(id).deadline + 1);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Disputed);
        tm.expire(id);
    }

    // ================================================================== refuse

    function test_refuse_whilePending() public {
        uint256 id = _submitStd();
        uint8 reason = uint8(PcnTypes.RefusalReason.FingerprintMismatch);
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskRefused(id, bob, PcnTypes.RefusalReason.FingerprintMismatch, DETAIL);
        vm.prank(bob);
        tm.refuse(id, reason, DETAIL);
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Refused));
        assertEq(uint8(t.refusalReason), reason);
        _assertPState(id, bob, PcnTypes.ParticipantState.Refused);
        // no further approval, and nothing was consumed
        _expectStatusRevert(id, PcnTypes.TaskStatus.Refused);
        vm.prank(alice);
        tm.approve(id, _rh(id));
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_refuse_whileAuthorised() public {
        uint256 id = _authorisedStd();
        vm.prank(carol);
        tm.refuse(id, uint8(PcnTypes.RefusalReason.PeerUnreachable), DETAIL);
        _assertStatus(id, PcnTypes.TaskStatus.Refused);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Refused);
        vm.prank(alice);
        tm.start(id);
        // uses stay consumed
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
    }

    function test_refuse_whileRunningByStartedParticipant() public {
        uint256 id = _runningStd();
        _submitReceipt(id, alice, RESULT, ALGO);
        vm.prank(bob);
        tm.refuse(id, uint8(PcnTypes.RefusalReason.ProtocolFailure), DETAIL);
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Refused));
        assertEq(uint8(t.refusalReason), uint8(PcnTypes.RefusalReason.ProtocolFailure));
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Refused);
        vm.prank(carol);
        tm.submitReceipt(id, rc);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Refused);
        vm.prank(carol);
        tm.refuse(id, 1, DETAIL);
    }

    function test_refuse_afterOwnReceiptReverts() public {
        uint256 id = _runningStd();
        _submitReceipt(id, alice, RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyFinished.selector, id, alice));
        vm.prank(alice);
        tm.refuse(id, 1, DETAIL);
    }

    function test_refuse_reasonBounds() public {
        uint256 id = _submitStd();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidRefusalReason.selector, uint8(0)));
        vm.prank(alice);
        tm.refuse(id, 0, DETAIL);
        uint8 tooBig = uint8(type(PcnTypes.RefusalReason).max) + 1;
        assertEq(tooBig, 20);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidRefusalReason.selector, tooBig));
        vm.prank(alice);
        tm.refuse(id, tooBig, DETAIL);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidRefusalReason.selector, uint8(255)));
        vm.prank(alice);
        tm.refuse(id, 255, DETAIL);
        // the largest reason is accepted
        vm.prank(alice);
        tm.refuse(id, tooBig - 1, DETAIL);
        assertEq(uint8(tm.task(id).refusalReason), uint8(PcnTypes.RefusalReason.KeyCapExceeded));
    }

    function test_refuse_notParticipantReverts() public {
        uint256 id = _submitStd();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotParticipant.selector, id, dave));
        vm.prank(dave);
        tm.refuse(id, 1, DETAIL);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 9));
        vm.prank(alice);
        tm.refuse(9, 1, DETAIL);
    }

    function test_refuse_cancelledOrExpiredReverts() public {
        uint256 id = _submitStd();
        vm.prank(dave);
        tm.cancel(id);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Cancelled);
        vm.prank(alice);
        tm.refuse(id, 1, DETAIL);

        uint256 id2 = _submitStd();
        vm.warp(tm.task(id2).deadline + 1);
        tm.expire(id2);
        _expectStatusRevert(id2, PcnTypes.TaskStatus.Expired);
        vm.prank(alice);
        tm.refuse(id2, 1, DETAIL);
    }

    // ================================================================== cancel

    function test_cancel_pending() public {
        uint256 id = _submitStd();
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskCancelled(id, dave);
        vm.prank(dave);
        tm.cancel(id);
        _assertStatus(id, PcnTypes.TaskStatus.Cancelled);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Cancelled);
        vm.prank(bob);
        tm.approve(id, _rh(id));
        _assertConsumption(0, 0, 0, 0, 0, 0);
    }

    function test_cancel_authorisedDoesNotRefund() public {
        uint256 id = _authorisedStd();
        vm.prank(dave);
        tm.cancel(id);
        _assertStatus(id, PcnTypes.TaskStatus.Cancelled);
        _assertConsumption(1, 1, 1, EPS, EPS, EPS);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Cancelled);
        vm.prank(alice);
        tm.start(id);
    }

    function test_cancel_afterStartReverts() public {
        uint256 id = _authorisedStd();
        vm.prank(bob);
        tm.start(id);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Running);
        vm.prank(dave);
        tm.cancel(id);
        _assertStatus(id, PcnTypes.TaskStatus.Running);
    }

    function test_cancel_nonRequesterReverts() public {
        uint256 id = _submitStd();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotRequester.selector, id, alice));
        vm.prank(alice);
        tm.cancel(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotRequester.selector, id, admin));
        vm.prank(admin);
        tm.cancel(id);
    }

    function test_cancel_twiceAndUnknownReverts() public {
        uint256 id = _submitStd();
        vm.prank(dave);
        tm.cancel(id);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Cancelled);
        vm.prank(dave);
        tm.cancel(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 2));
        vm.prank(dave);
        tm.cancel(2);
    }

    // ================================================================== expire

    function test_expire_pending() public {
        uint256 id = _submitStd();
        uint64 deadline = tm.task(id).deadline;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskNotExpired.selector, id, deadline));
        tm.expire(id);
        vm.warp(deadline + 1);
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskExpired(id, outsider);
        vm.prank(outsider); // anyone
        tm.expire(id);
        _assertStatus(id, PcnTypes.TaskStatus.Expired);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Expired);
        tm.expire(id);
    }

    function test_expire_authorisedAndRunning() public {
        uint256 a = _authorisedStd();
        uint256 r = _runningStd();
        vm.warp(tm.task(r).deadline + 1);
        tm.expire(a);
        tm.expire(r);
        _assertStatus(a, PcnTypes.TaskStatus.Expired);
        _assertStatus(r, PcnTypes.TaskStatus.Expired);
        _assertConsumption(2, 2, 2, 2 * EPS, 2 * EPS, 2 * EPS);
    }

    function test_expire_terminalReverts() public {
        uint256 id = _submitStd();
        vm.prank(dave);
        tm.cancel(id);
        vm.warp(tm.task(id).deadline + 1);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Cancelled);
        tm.expire(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 2));
        tm.expire(2);
    }

    function test_afterDeadline_executionReverts() public {
        uint256 id = _authorisedStd();
        vm.prank(alice);
        tm.start(id);
        uint64 deadline = tm.task(id).deadline;
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskDeadlinePassed.selector, id, deadline));
        vm.prank(bob);
        tm.start(id);
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskDeadlinePassed.selector, id, deadline));
        vm.prank(alice);
        tm.submitReceipt(id, rc);
    }

    // ================================================================== start

    function test_start_firstStartRuns() public {
        uint256 id = _authorisedStd();
        vm.expectEmit(true, true, false, true, address(tm));
        emit TaskManager.TaskStarted(id, bob);
        vm.prank(bob);
        tm.start(id);
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Running));
        assertEq(t.startedCount, 1);
        _assertPState(id, bob, PcnTypes.ParticipantState.Started);
        _assertPState(id, alice, PcnTypes.ParticipantState.Invited);
    }

    function test_start_pendingReverts() public {
        uint256 id = _submitStd();
        _expectStatusRevert(id, PcnTypes.TaskStatus.Pending);
        vm.prank(alice);
        tm.start(id);
    }

    function test_start_twiceReverts() public {
        uint256 id = _authorisedStd();
        vm.prank(alice);
        tm.start(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyStarted.selector, id, alice));
        vm.prank(alice);
        tm.start(id);
        _submitReceipt(id, alice, RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyStarted.selector, id, alice));
        vm.prank(alice);
        tm.start(id);
        assertEq(tm.task(id).startedCount, 1);
    }

    function test_start_notParticipantAndUnknownReverts() public {
        uint256 id = _authorisedStd();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotParticipant.selector, id, dave));
        vm.prank(dave);
        tm.start(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 5));
        vm.prank(alice);
        tm.start(5);
    }

    // ================================================================== submitReceipt

    function test_submitReceipt_notRunningReverts() public {
        uint256 id = _submitStd();
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Pending);
        vm.prank(alice);
        tm.submitReceipt(id, rc);
        _approveAll(id);
        _expectStatusRevert(id, PcnTypes.TaskStatus.Authorised);
        vm.prank(alice);
        tm.submitReceipt(id, rc);
    }

    function test_submitReceipt_notStartedReverts() public {
        uint256 id = _authorisedStd();
        vm.prank(alice);
        tm.start(id);
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotStarted.selector, id, bob));
        vm.prank(bob);
        tm.submitReceipt(id, rc);
    }

    function test_submitReceipt_twiceReverts() public {
        uint256 id = _runningStd();
        _submitReceipt(id, alice, RESULT, ALGO);
        TaskManager.Receipt memory rc = _receipt(keccak256("changed my mind"), ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyFinished.selector, id, alice));
        vm.prank(alice);
        tm.submitReceipt(id, rc);
        assertEq(tm.receipt(id, alice).resultHash, RESULT);
        assertEq(tm.task(id).receiptCount, 1);
    }

    function test_submitReceipt_invalidTimesReverts() public {
        uint256 id = _runningStd();
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        rc.startedAt = 10;
        rc.finishedAt = 9;
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidReceiptTimes.selector, uint64(10), uint64(9)));
        vm.prank(alice);
        tm.submitReceipt(id, rc);
        rc.finishedAt = 10; // equal is fine
        vm.prank(alice);
        tm.submitReceipt(id, rc);
    }

    function test_submitReceipt_notParticipantReverts() public {
        uint256 id = _runningStd();
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotParticipant.selector, id, dave));
        vm.prank(dave);
        tm.submitReceipt(id, rc);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 3));
        vm.prank(dave);
        tm.submitReceipt(3, rc);
    }

    // ================================================================== suspension

    function test_suspended_cannotStartRefuseOrReceipt() public {
        uint256 id = _authorisedStd();
        vm.prank(alice);
        tm.start(id);
        _suspend(alice);
        _suspend(bob);

        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(bob);
        tm.start(id);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(bob);
        tm.refuse(id, 1, DETAIL);
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        tm.submitReceipt(id, rc);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        tm.refuse(id, 1, DETAIL);

        _assertPState(id, alice, PcnTypes.ParticipantState.Started);
        _assertPState(id, bob, PcnTypes.ParticipantState.Invited);
        _assertStatus(id, PcnTypes.TaskStatus.Running);

        // reinstated organisations carry on to completion
        _reinstate(alice);
        _reinstate(bob);
        vm.prank(bob);
        tm.start(id);
        vm.prank(carol);
        tm.start(id);
        _receiptAll(id, RESULT);
        _assertStatus(id, PcnTypes.TaskStatus.Completed);
    }

    function test_suspended_cannotSubmitOrApprove() public {
        uint256 id = _submitStd();
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        tm.approve(id, _rh(id));
        TaskManager.TaskRequest memory r = _request(_ids(dsB), _addrs(bob), EPS);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        tm.submit(r);
        // as a participant of a new task it is refused too
        r = _request(_ids(dsB), _addrs(bob, alice), EPS);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(dave);
        tm.submit(r);
    }

    // ================================================================== views

    function test_views_unknownTaskReverts() public {
        bytes memory err = abi.encodeWithSelector(TaskManager.UnknownTask.selector, 1);
        vm.expectRevert(err);
        tm.task(1);
        vm.expectRevert(err);
        tm.taskDatasets(1);
        vm.expectRevert(err);
        tm.taskParticipants(1);
        vm.expectRevert(err);
        tm.taskApprovers(1);
        vm.expectRevert(err);
        tm.participantState(1, alice);
        vm.expectRevert(err);
        tm.receipt(1, alice);
        bytes memory err0 = abi.encodeWithSelector(TaskManager.UnknownTask.selector, 0);
        vm.expectRevert(err0);
        tm.task(0);
    }

    function test_receipt_zeroBeforeSubmission() public {
        uint256 id = _runningStd();
        TaskManager.Receipt memory r = tm.receipt(id, alice);
        assertEq(r.resultHash, bytes32(0));
        assertEq(r.finishedAt, 0);
    }
}
