// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {console2} from "forge-std/console2.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {PcnHandler} from "./utils/PcnHandler.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {DatasetRegistry} from "../src/DatasetRegistry.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// @notice Stateful invariants over random call sequences driven by PcnHandler: four
/// organisations (alice owns two datasets, bob and carol one each, dave none), small
/// policies so that uses and budgets run out, suspensions, expiries and disputes.
contract InvariantsTest is PcnFixture {
    PcnHandler internal handler;
    uint256 internal dsA2;

    function setUp() public virtual override {
        super.setUp();
        _setLimits(dsA, 6, 8 * EPS);
        _setLimits(dsB, 5, 6 * EPS);
        _setLimits(dsC, 8, 5 * EPS);
        dsA2 = _registerDataset(alice, 4, 4 * EPS, "A2");

        address[] memory orgs = _members(); // alice, bob, carol, dave
        uint256[] memory keys = new uint256[](4);
        keys[0] = aliceKey;
        keys[1] = bobKey;
        keys[2] = carolKey;
        keys[3] = daveKey;
        uint256[] memory ids = new uint256[](4);
        ids[0] = dsA;
        ids[1] = dsB;
        ids[2] = dsC;
        ids[3] = dsA2;
        handler = new PcnHandler(consortium, datasets, tm, admin, ALGO, orgs, keys, ids);
        targetContract(address(handler));
    }

    function _isApprovedState(PcnTypes.TaskStatus s) internal pure returns (bool) {
        return s == PcnTypes.TaskStatus.Authorised || s == PcnTypes.TaskStatus.Running
            || s == PcnTypes.TaskStatus.Completed || s == PcnTypes.TaskStatus.Disputed;
    }

    // ================================================================== invariants

    /// No task is Authorised, Running, Completed or Disputed without the approval of every
    /// owner of its input datasets, and the approver set is exactly the set of those owners.
    function invariant_noAuthorisationWithoutEveryOwner() public view {
        uint256 n = tm.taskCount();
        for (uint256 id = 1; id <= n; ++id) {
            TaskManager.Task memory t = tm.task(id);
            (address[] memory owners, bool[] memory approved) = tm.taskApprovers(id);
            (uint256[] memory ids,) = tm.taskDatasets(id);
            assertEq(owners.length, t.requiredApprovals, "required approvals");
            // every dataset owner is an approver, and every approver owns a dataset of the task
            for (uint256 i = 0; i < ids.length; ++i) {
                address owner = datasets.ownerOf(ids[i]);
                bool found;
                for (uint256 j = 0; j < owners.length; ++j) {
                    if (owners[j] == owner) found = true;
                }
                assertTrue(found, "dataset owner missing from approvers");
            }
            uint256 given;
            for (uint256 j = 0; j < owners.length; ++j) {
                if (approved[j]) ++given;
                assertEq(approved[j], handler.ghostApproved(id, owners[j]), "approval not observed by handler");
            }
            assertEq(given, t.approvals, "approval count");
            if (_isApprovedState(t.status)) {
                assertEq(given, owners.length, "authorised without every owner's approval");
                assertGt(t.authorisedAt, 0);
            }
        }
    }

    /// Every dataset stays within its policy, and what it was charged equals the sum over the
    /// authorisations the handler observed (nothing charged by a failed authorisation).
    function invariant_datasetConsumptionWithinPolicy() public view {
        uint256 n = datasets.datasetCount();
        for (uint256 id = 1; id <= n; ++id) {
            DatasetRegistry.Dataset memory d = datasets.dataset(id);
            assertLe(d.uses, d.maxUses, "uses > maxUses");
            assertLe(d.epsilonSpent, d.epsilonTotal, "epsilonSpent > epsilonTotal");
            assertEq(d.uses, handler.ghostUses(id), "uses != observed authorisations");
            assertEq(d.epsilonSpent, handler.ghostEpsilon(id), "epsilonSpent != observed authorisations");
        }
    }

    /// A suspended organisation never gets a successful start, refuse, submitReceipt,
    /// approve or submit.
    function invariant_suspendedOrganisationNeverActs() public view {
        assertEq(handler.ghostSuccessWhileSuspended(), 0);
    }

    /// Every Completed task has a receipt from every participant not reported dropped, all with
    /// the task's result hash and algorithm hash; every Disputed task has all those receipts
    /// and a real disagreement among them.
    function invariant_completedMeansUnanimousReceipts() public view {
        uint256 n = tm.taskCount();
        for (uint256 id = 1; id <= n; ++id) {
            TaskManager.Task memory t = tm.task(id);
            if (t.status != PcnTypes.TaskStatus.Completed && t.status != PcnTypes.TaskStatus.Disputed) continue;
            address[] memory parts = tm.taskParticipants(id);
            assertEq(t.receiptCount + tm.droppedCount(id), parts.length, "receipt count");
            bytes32 first;
            bool seen;
            bool agree = true;
            for (uint256 i = 0; i < parts.length; ++i) {
                if (tm.participantState(id, parts[i]) == PcnTypes.ParticipantState.Dropped) continue;
                assertEq(
                    uint8(tm.participantState(id, parts[i])), uint8(PcnTypes.ParticipantState.Receipted), "no receipt"
                );
                if (!seen) {
                    first = tm.receipt(id, parts[i]).resultHash;
                    seen = true;
                }
                TaskManager.Receipt memory r = tm.receipt(id, parts[i]);
                assertEq(r.resultHash, handler.ghostResult(id, parts[i]), "stored result != submitted");
                assertEq(r.algorithmHash, handler.ghostAlgo(id, parts[i]), "stored algorithm != submitted");
                if (r.resultHash != first || r.algorithmHash != t.algorithmHash) agree = false;
                if (t.status == PcnTypes.TaskStatus.Completed) {
                    assertEq(r.resultHash, t.resultHash, "result hash differs");
                    assertEq(r.algorithmHash, t.algorithmHash, "algorithm hash differs");
                }
            }
            assertEq(agree, t.status == PcnTypes.TaskStatus.Completed, "Completed iff unanimous");
            if (t.status == PcnTypes.TaskStatus.Disputed) assertEq(t.resultHash, bytes32(0));
        }
    }

    /// #13.5 / #13.7: a task never completes with fewer than minSurvivors receipts; an algorithm
    /// not approved as dropout-tolerant never has a dropped party; no dropout before the
    /// party's silence period; no task is ever submitted with an unapproved algorithm.
    function invariant_dropoutAndAlgorithmRules() public view {
        assertEq(handler.ghostDropsNonTolerant(), 0, "dropout on a non-tolerant algorithm");
        assertEq(handler.ghostDropsBeforeSilence(), 0, "dropout before the silence period");
        assertEq(handler.ghostUnapprovedUsed(), 0, "unapproved algorithm used");
        uint256 n = tm.taskCount();
        for (uint256 id = 1; id <= n; ++id) {
            TaskManager.Task memory t = tm.task(id);
            if (t.status == PcnTypes.TaskStatus.Completed) assertGe(t.receiptCount, tm.minSurvivors(id), "survivors");
            if (!algos.isDropoutTolerant(t.algorithmHash)) assertEq(tm.droppedCount(id), 0, "dropped");
            assertTrue(algos.isUsable(t.algorithmHash), "task with an unusable algorithm");
        }
    }

    /// Terminal states never change, and the per-task counters match participant states.
    function invariant_terminalStatesFinalAndCountersConsistent() public view {
        uint256 n = tm.taskCount();
        for (uint256 id = 1; id <= n; ++id) {
            TaskManager.Task memory t = tm.task(id);
            PcnTypes.TaskStatus seen = handler.ghostTerminal(id);
            if (seen != PcnTypes.TaskStatus.None) assertEq(uint8(t.status), uint8(seen), "terminal state changed");

            address[] memory parts = tm.taskParticipants(id);
            uint256 receipted;
            uint256 startedOrReceipted;
            uint256 refused;
            for (uint256 i = 0; i < parts.length; ++i) {
                PcnTypes.ParticipantState s = tm.participantState(id, parts[i]);
                if (s == PcnTypes.ParticipantState.Receipted) ++receipted;
                if (s == PcnTypes.ParticipantState.Receipted || s == PcnTypes.ParticipantState.Started) {
                    ++startedOrReceipted;
                }
                if (s == PcnTypes.ParticipantState.Refused) ++refused;
            }
            assertEq(t.receiptCount, receipted, "receiptCount");
            assertGe(t.startedCount, startedOrReceipted, "startedCount");
            assertLe(t.startedCount, parts.length, "startedCount bound");
            assertEq(refused > 0, t.status == PcnTypes.TaskStatus.Refused, "Refused iff a participant refused");
            if (t.status == PcnTypes.TaskStatus.Refused) assertEq(refused, 1);
            if (t.startedCount > 0) assertTrue(t.status != PcnTypes.TaskStatus.Pending);
        }
    }

    /// Outcome summary of the last run (shown with -vv).
    function afterInvariant() public view {
        console2.log("tasks", handler.taskCount(), "authorised", handler.successes("authorised"));
        console2.log("dropouts", handler.successes("reportDropout"), "attempts", handler.ghostDropAttempts());
        console2.log(
            "completed",
            handler.outcomes(PcnTypes.TaskStatus.Completed),
            "disputed",
            handler.outcomes(PcnTypes.TaskStatus.Disputed)
        );
        console2.log(
            "refused",
            handler.outcomes(PcnTypes.TaskStatus.Refused),
            "cancelled",
            handler.outcomes(PcnTypes.TaskStatus.Cancelled)
        );
        console2.log(
            "expired",
            handler.outcomes(PcnTypes.TaskStatus.Expired),
            "attempts while suspended",
            handler.ghostAttemptsWhileSuspended()
        );
    }

    // ================================================================== the handler is not vacuous

    /// A fixed sequence through the handler reaches every outcome, exercises suspended callers,
    /// and keeps the invariants above: a guard against a handler that never gets anywhere.
    function test_handler_reachesEveryOutcome() public {
        // task 1: {A} alice only, completed
        handler.submit(3, 3, 1, false, EPS, 1 days);
        for (uint256 i = 0; i < 3; ++i) {
            handler.advance(1, 2, 1);
        }
        // task 2: {A, B} + dave, disputed (bob's receipt disagrees)
        handler.submit(3, 3, 3, true, EPS, 1 days);
        handler.advance(1, 2, 1); // dave (no data) consents
        handler.advance(1, 2, 1); // alice approves
        handler.approveBySig(1, 1, 0, 0); // bob approves by signature -> authorised
        for (uint256 i = 0; i < 3; ++i) {
            handler.advance(1, 2, 1); // everyone starts
        }
        handler.submitReceipt(1, 0, 2); // alice agrees
        handler.submitReceipt(1, 1, 0); // bob disagrees
        handler.submitReceipt(1, 2, 2); // dave agrees
        // task 3: refused while pending; task 4: cancelled; task 5: expired
        handler.submit(0, 0, 2, false, 0, 1 days);
        handler.refuse(1, 0, 4);
        handler.submit(0, 0, 4, false, 0, 1 days);
        handler.cancel(1, 0, true);
        handler.submit(0, 0, 8, false, 0, 1 hours);
        // a suspended bob cannot act on task 6
        handler.submit(0, 0, 2, false, 0, 3 days);
        handler.suspendOrReinstate(1);
        handler.advance(1, 2, 1);
        handler.approve(1, 0, false);
        handler.refuse(1, 0, 4);
        handler.suspendOrReinstate(1);
        handler.advance(1, 2, 1); // bob approves after reinstatement
        handler.warpAndExpire(2 days, 16); // taskIds[4] (task 5) expires
        handler.reportDropout(5, 2, 3600); // on task 6 (psi, not dropout-tolerant): refused
        handler.submitUnapproved(7, 3); // a fresh, unapproved algorithm: refused
        assertEq(handler.ghostDropAttempts(), 1);
        assertEq(handler.ghostUnapprovedAttempts(), 1);

        assertEq(uint8(tm.task(1).status), uint8(PcnTypes.TaskStatus.Completed));
        assertEq(uint8(tm.task(2).status), uint8(PcnTypes.TaskStatus.Disputed));
        assertEq(uint8(tm.task(3).status), uint8(PcnTypes.TaskStatus.Refused));
        assertEq(uint8(tm.task(4).status), uint8(PcnTypes.TaskStatus.Cancelled));
        assertEq(uint8(tm.task(5).status), uint8(PcnTypes.TaskStatus.Expired));
        assertEq(uint8(tm.task(6).status), uint8(PcnTypes.TaskStatus.Authorised));
        assertEq(handler.outcomes(PcnTypes.TaskStatus.Completed), 1);
        assertEq(handler.outcomes(PcnTypes.TaskStatus.Disputed), 1);
        assertGt(handler.ghostAttemptsWhileSuspended(), 0);
        assertEq(handler.successes("approveBySig"), 1);
        assertEq(handler.ghostUses(dsA), 2);
        assertEq(handler.ghostUses(dsB), 2);

        invariant_noAuthorisationWithoutEveryOwner();
        invariant_datasetConsumptionWithinPolicy();
        invariant_suspendedOrganisationNeverActs();
        invariant_completedMeansUnanimousReceipts();
        invariant_terminalStatesFinalAndCountersConsistent();
        invariant_dropoutAndAlgorithmRules();
    }
}

/// The same invariants with the fixture's algorithm approved as dropout-tolerant, so that the
/// handler's dropouts can succeed: never before the silence period, never below minSurvivors.
contract InvariantsDropoutTolerantTest is InvariantsTest {
    function setUp() public override {
        super.setUp();
        vm.startPrank(admin);
        algos.revoke(ALGO);
        vm.stopPrank();
        vm.prank(alice);
        algos.register(ALGO, "fedavg", "1.0.0", keccak256("fedavg"));
        vm.prank(admin);
        algos.approve(ALGO, true);
    }

    /// A fixed sequence: alice (recipient) cannot drop carol at once, can after the silence,
    /// and the task then completes on the two survivors' receipts.
    function test_handler_dropsOnlyAfterSilence() public {
        handler.submit(0, 0, 7, false, EPS, 2); // {A, B, C}: alice, bob, carol; alice receives; 2 must finish
        assertEq(tm.minSurvivors(1), 2);
        for (uint256 i = 0; i < 6; ++i) {
            handler.advance(1, 2, 1); // three approvals, three starts
        }
        assertEq(uint8(tm.task(1).status), uint8(PcnTypes.TaskStatus.Running));
        handler.reportDropout(1, 2, 0); // at once: PartyNotSilent
        assertEq(handler.successes("reportDropout"), 0);
        handler.reportDropout(1, 2, 120); // after the silence (60 s)
        assertEq(handler.successes("reportDropout"), 1);
        assertEq(tm.droppedCount(1), 1);
        handler.advance(1, 2, 1);
        handler.advance(1, 2, 1);
        assertEq(uint8(tm.task(1).status), uint8(PcnTypes.TaskStatus.Completed));
        invariant_completedMeansUnanimousReceipts();
        invariant_terminalStatesFinalAndCountersConsistent();
        invariant_dropoutAndAlgorithmRules();
    }
}
