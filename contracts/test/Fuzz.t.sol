// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {DatasetRegistry} from "../src/DatasetRegistry.sol";
import {Consortium} from "../src/Consortium.sol";
import {AuditLog} from "../src/AuditLog.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// @notice Property-based tests. 256 runs under the default profile, 10,000 under
/// FOUNDRY_PROFILE=ci, with the fixed seed of foundry.toml.
contract FuzzTest is PcnFixture {
    uint64 internal constant BIG = 1_000_000 * EPS;

    function _min3(uint64 a, uint64 b, uint64 c) internal pure returns (uint64 m) {
        m = a < b ? a : b;
        m = m < c ? m : c;
    }

    // ------------------------------------------------------------------ privacy budget

    /// Submission is allowed iff the requested epsilon fits in the remaining budget.
    function testFuzz_submit_epsilonVsBudget(uint64 total, uint64 requested) public {
        _setLimits(dsA, DEFAULT_MAX_USES, total);
        TaskManager.TaskRequest memory r = _request(_ids(dsA), _addrs(alice), requested);
        bool fits = requested <= total;
        if (!fits) {
            vm.expectRevert(
                abi.encodeWithSelector(DatasetRegistry.PrivacyBudgetExceeded.selector, dsA, uint64(0), requested, total)
            );
        }
        vm.prank(dave);
        uint256 id = tm.submit(r);
        if (fits) {
            _remember(id);
            _approveAll(id);
            assertEq(_spent(dsA), requested);
            assertEq(_uses(dsA), 1);
        }
    }

    /// Two tasks over datasets A, B, C each fit the budgets at submission; the second is
    /// authorised iff e1 + e2 fits every dataset's total. On failure the error names the first
    /// dataset (in task order) whose budget is short, and no dataset is charged.
    function testFuzz_authorise_epsilonAllOrNothing(uint64 tA, uint64 tB, uint64 tC, uint64 e1, uint64 e2) public {
        tA = uint64(bound(tA, 0, 50 * EPS));
        tB = uint64(bound(tB, 0, 50 * EPS));
        tC = uint64(bound(tC, 0, 50 * EPS));
        uint64 cap = _min3(tA, tB, tC);
        e1 = uint64(bound(e1, 0, cap));
        e2 = uint64(bound(e2, 0, cap));
        _setLimits(dsA, DEFAULT_MAX_USES, tA);
        _setLimits(dsB, DEFAULT_MAX_USES, tB);
        _setLimits(dsC, DEFAULT_MAX_USES, tC);

        uint256 first = _submit(dave, _request(_ids(dsA, dsB, dsC), _addrs(alice, bob, carol), e1));
        uint256 second = _submit(dave, _request(_ids(dsA, dsB, dsC), _addrs(alice, bob, carol), e2));
        _approveAll(first);

        vm.prank(alice);
        tm.approve(second, _rh(second));
        vm.prank(bob);
        tm.approve(second, _rh(second));

        uint256 sum = uint256(e1) + e2;
        uint256 failing;
        uint64 failingTotal;
        if (sum > tA) (failing, failingTotal) = (dsA, tA);
        else if (sum > tB) (failing, failingTotal) = (dsB, tB);
        else if (sum > tC) (failing, failingTotal) = (dsC, tC);

        if (failing != 0) {
            vm.expectRevert(
                abi.encodeWithSelector(DatasetRegistry.PrivacyBudgetExceeded.selector, failing, e1, e2, failingTotal)
            );
        }
        vm.prank(carol);
        tm.approve(second, _rh(second));

        uint64 expectedSpent = failing != 0 ? e1 : e1 + e2;
        uint64 expectedUses = failing != 0 ? 1 : 2;
        uint256[3] memory ids = [dsA, dsB, dsC];
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(_spent(ids[i]), expectedSpent, "epsilonSpent");
            assertEq(_uses(ids[i]), expectedUses, "uses");
            DatasetRegistry.Dataset memory d = datasets.dataset(ids[i]);
            assertLe(d.epsilonSpent, d.epsilonTotal);
        }
        assertEq(
            uint8(_status(second)), uint8(failing != 0 ? PcnTypes.TaskStatus.Pending : PcnTypes.TaskStatus.Authorised)
        );
    }

    // ------------------------------------------------------------------ uses

    /// With maxUses = m, exactly min(m, n) of n pre-submitted tasks get authorised.
    function testFuzz_maxUses(uint8 maxUses, uint8 attempts) public {
        uint64 m = uint64(bound(maxUses, 0, 10));
        uint256 n = bound(attempts, 1, 12);
        _setLimits(dsA, m, BIG);
        TaskManager.TaskRequest memory r = _request(_ids(dsA), _addrs(alice), EPS);

        if (m == 0) {
            vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsA, uint64(0), uint64(0)));
            vm.prank(dave);
            tm.submit(r);
            return;
        }
        uint256[] memory ids = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            ids[i] = _submit(dave, r);
        }
        uint256 authorised;
        for (uint256 i = 0; i < n; ++i) {
            if (i >= m) {
                vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsA, m, m));
            }
            vm.prank(alice);
            tm.approve(ids[i], _rh(ids[i]));
            if (_status(ids[i]) == PcnTypes.TaskStatus.Authorised) ++authorised;
        }
        uint256 expected = n < m ? n : m;
        assertEq(authorised, expected);
        assertEq(_uses(dsA), expected);
        assertEq(_spent(dsA), expected * EPS);
        assertLe(_uses(dsA), m);
    }

    /// Policy limits can be changed to anything at or above what was consumed, never below.
    function testFuzz_setPolicyLimits_neverBelowConsumption(uint8 used, uint64 eps, uint64 newMax, uint64 newTotal)
        public
    {
        uint256 u = bound(used, 0, 5);
        eps = uint64(bound(eps, 0, 10 * EPS));
        for (uint256 i = 0; i < u; ++i) {
            _submit(dave, _request(_ids(dsA), _addrs(alice), eps));
            _approveAll(tm.taskCount());
        }
        // forge-lint: disable-next-line(unsafe-typecast) -- u is bounded by the fuzz set-up
        uint64 spent = uint64(u) * eps;
        assertEq(_spent(dsA), spent);
        newMax = uint64(bound(newMax, 0, 10));
        newTotal = uint64(bound(newTotal, 0, 60 * EPS));
        bool below = newMax < u || newTotal < spent;
        DatasetRegistry.PolicyLimits memory lim = _limits(newMax, newTotal);
        if (below) vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyBelowConsumption.selector, dsA));
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, lim);
        DatasetRegistry.Dataset memory d = datasets.dataset(dsA);
        assertEq(d.maxUses, below ? DEFAULT_MAX_USES : newMax);
        assertEq(d.epsilonTotal, below ? DEFAULT_EPS_TOTAL : newTotal);
        assertLe(d.uses, d.maxUses);
        assertLe(d.epsilonSpent, d.epsilonTotal);
    }

    // ------------------------------------------------------------------ deadlines

    /// submit needs deadline > now; approve/start/receipt need now <= deadline; expire needs
    /// now > deadline.
    function testFuzz_deadlines(uint32 ttl, uint32 elapsed, bool runFirst) public {
        ttl = uint32(bound(ttl, 0, 30 days));
        elapsed = uint32(bound(elapsed, 0, 60 days));
        TaskManager.TaskRequest memory r = _stdRequest();
        r.deadline = uint64(block.timestamp) + ttl;
        if (ttl == 0) {
            vm.expectRevert(abi.encodeWithSelector(TaskManager.DeadlineNotInFuture.selector, r.deadline));
            vm.prank(dave);
            tm.submit(r);
            return;
        }
        uint256 id = _submit(dave, r);
        if (runFirst) {
            _approveAll(id);
            vm.prank(alice);
            tm.start(id);
        }
        vm.warp(block.timestamp + elapsed);
        bool late = block.timestamp > r.deadline;

        if (late) {
            vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskDeadlinePassed.selector, id, r.deadline));
        }
        if (runFirst) {
            vm.prank(bob);
            tm.start(id);
        } else {
            vm.prank(alice);
            tm.approve(id, _rh(id));
        }

        if (!late) vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskNotExpired.selector, id, r.deadline));
        tm.expire(id);
        assertEq(uint8(_status(id)) == uint8(PcnTypes.TaskStatus.Expired), late);
    }

    // ------------------------------------------------------------------ receipts

    /// Four participants (dave computes without data) post receipts in a rotated order.
    /// Completed iff every result hash is equal and every algorithm hash is the task's.
    function testFuzz_receipts_completedIffAllAgree(bytes32[4] memory results, uint8 mask, uint8 rotation) public {
        // bits 0-3: force result i equal to results[0]; bits 4-7: algorithm hash i is wrong
        if (mask & 0x0f == 0x0f) mask &= 0x0f; // make the all-agree case common
        address[] memory parts = new address[](4);
        parts[0] = alice;
        parts[1] = bob;
        parts[2] = carol;
        parts[3] = dave;
        uint256 id = _submit(dave, _request(_ids(dsA, dsB, dsC), parts, EPS));
        _approveAll(id);
        _startAll(id);

        bytes32[4] memory algoUsed;
        bool agree = true;
        for (uint256 i = 0; i < 4; ++i) {
            // forge-lint: disable-next-line(incorrect-shift) -- bit i of a fuzzed mask
            if (mask & (1 << i) != 0) results[i] = results[0];
            // forge-lint: disable-next-line(incorrect-shift) -- bit i+4 of a fuzzed mask
            algoUsed[i] = mask & (1 << (i + 4)) != 0 ? keccak256(abi.encode("wrong", results[i])) : ALGO;
            if (results[i] != results[0] || algoUsed[i] != ALGO) agree = false;
        }
        uint256 rot = bound(rotation, 0, 3);
        for (uint256 k = 0; k < 4; ++k) {
            uint256 i = (k + rot) % 4;
            if (k == 3) {
                vm.expectEmit(true, false, false, true, address(tm));
                if (agree) emit TaskManager.TaskCompleted(id, results[0]);
                else emit TaskManager.TaskDisputed(id);
            }
            _submitReceipt(id, parts[i], results[i], algoUsed[i]);
            if (k < 3) assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Running));
        }
        TaskManager.Task memory t = tm.task(id);
        if (agree) {
            assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Completed));
            assertEq(t.resultHash, results[0]);
        } else {
            assertEq(uint8(t.status), uint8(PcnTypes.TaskStatus.Disputed));
            assertEq(t.resultHash, bytes32(0));
        }
    }

    function testFuzz_receiptTimes(uint64 startedAt, uint64 finishedAt) public {
        uint256 id = _runningStd();
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        rc.startedAt = startedAt;
        rc.finishedAt = finishedAt;
        if (finishedAt < startedAt) {
            vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidReceiptTimes.selector, startedAt, finishedAt));
        }
        vm.prank(alice);
        tm.submitReceipt(id, rc);
        assertEq(uint8(_pstate(id, alice)) == uint8(PcnTypes.ParticipantState.Receipted), finishedAt >= startedAt);
    }

    function testFuzz_refusalReason(uint8 reason) public {
        uint256 id = _authorisedStd();
        bool valid = reason >= 1 && reason <= uint8(type(PcnTypes.RefusalReason).max);
        if (!valid) vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidRefusalReason.selector, reason));
        vm.prank(bob);
        tm.refuse(id, reason, keccak256("detail"));
        TaskManager.Task memory t = tm.task(id);
        assertEq(uint8(t.status), uint8(valid ? PcnTypes.TaskStatus.Refused : PcnTypes.TaskStatus.Authorised));
        assertEq(uint8(t.refusalReason), valid ? reason : 0);
    }

    // ------------------------------------------------------------------ signatures

    function testFuzz_approveBySig_onlyOwnersKey(uint256 pk) public {
        pk = bound(pk, 1, SECP256K1_N - 1);
        vm.assume(pk != bobKey);
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(pk, id, bob, 0, deadline);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, vm.addr(pk)));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, sig);
        assertEq(tm.nonces(bob), 0);
    }

    function testFuzz_approveBySig_nonce(uint256 nonce) public {
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, id, bob, nonce, deadline);
        if (nonce != 0) vm.expectRevert(abi.encodeWithSelector(Nonces.InvalidAccountNonce.selector, bob, 0));
        tm.approveBySig(id, _rh(id), bob, nonce, deadline, sig);
        assertEq(tm.nonces(bob), nonce == 0 ? 1 : 0);
    }

    function testFuzz_approveBySig_deadline(uint256 sigDeadline, uint32 elapsed) public {
        uint256 id = _submitStd();
        sigDeadline = bound(sigDeadline, block.timestamp, type(uint256).max);
        elapsed = uint32(bound(elapsed, 0, TASK_TTL)); // stay within the task deadline
        bytes memory sig = _signApproval(bobKey, id, bob, 0, sigDeadline);
        vm.warp(block.timestamp + elapsed);
        bool expired = block.timestamp > sigDeadline;
        if (expired) {
            vm.expectRevert(abi.encodeWithSelector(TaskManager.ApprovalSignatureExpired.selector, sigDeadline));
        }
        tm.approveBySig(id, _rh(id), bob, 0, sigDeadline, sig);
        assertEq(tm.task(id).approvals, expired ? 0 : 1);
    }

    function testFuzz_approveBySig_otherChainRejected(uint64 otherChain) public {
        vm.assume(otherChain != block.chainid && otherChain != 0);
        uint256 id = _submitStd();
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(bobKey, _approvalDigest(id, bob, 0, deadline));
        vm.chainId(otherChain);
        bytes32 digest = _approvalDigest(id, bob, 0, deadline);
        assertEq(tm.approvalDigest(id, _rh(id), bob, 0, deadline), digest);
        address recovered = ecrecover(digest, v, r, s);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidApprovalSignature.selector, bob, recovered));
        tm.approveBySig(id, _rh(id), bob, 0, deadline, abi.encodePacked(r, s, v));
    }

    /// The contract's digest equals the one computed independently, for any inputs and chain.
    function testFuzz_approvalDigest(uint256 taskId, address owner, uint256 nonce, uint256 deadline, uint64 chain)
        public
    {
        vm.assume(chain != 0);
        vm.chainId(chain);
        assertEq(
            tm.approvalDigest(taskId, _rh(taskId), owner, nonce, deadline),
            _approvalDigest(taskId, owner, nonce, deadline)
        );
    }

    // ------------------------------------------------------------------ other contracts

    function testFuzz_auditLog_strictlyIncreasing(uint64 first, uint64 second, bytes32 head) public {
        vm.assume(head != bytes32(0));
        vm.prank(alice);
        auditLog.anchor(first, head);
        if (second <= first) {
            vm.expectRevert(abi.encodeWithSelector(AuditLog.SequenceNotIncreasing.selector, first, second));
        }
        vm.prank(alice);
        auditLog.anchor(second, head);
        (AuditLog.Anchor memory a, uint256 count) = auditLog.latest(alice);
        assertEq(a.sequence, second > first ? second : first);
        assertEq(count, second > first ? 2 : 1);
    }

    function testFuzz_admit_labelLengths(uint16 nameLen, uint16 endpointLen) public {
        nameLen = uint16(bound(nameLen, 0, 100));
        endpointLen = uint16(bound(endpointLen, 0, 300));
        address erin = makeAddr("erin");
        string memory name = string(new bytes(nameLen));
        string memory endpoint = string(new bytes(endpointLen));
        bool nameOk = nameLen >= 1 && nameLen <= 64;
        bool endpointOk = endpointLen >= 1 && endpointLen <= 256;
        if (!nameOk) vm.expectRevert(Consortium.InvalidOrganisationName.selector);
        else if (!endpointOk) vm.expectRevert(Consortium.InvalidEndpoint.selector);
        vm.prank(admin);
        consortium.admit(erin, name, keccak256("k"), endpoint);
        assertEq(consortium.isActive(erin), nameOk && endpointOk);
    }
}
