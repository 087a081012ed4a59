// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// @notice #13.6 (b): approvals name the whole request, not only its id.
contract RequestHashTest is PcnFixture {
    /// The hash recomputed from the request the test built, independently of the contract.
    function _hashOf(uint256 id, TaskManager.TaskRequest memory r, address requester, uint64 createdAt)
        internal
        view
        returns (bytes32)
    {
        uint32[] memory versions = new uint32[](r.datasetIds.length);
        bytes32[] memory roots = new bytes32[](r.datasetIds.length);
        for (uint256 i = 0; i < r.datasetIds.length; ++i) {
            versions[i] = datasets.currentVersion(r.datasetIds[i]);
            roots[i] = datasets.fingerprint(r.datasetIds[i], versions[i]).merkleRoot;
        }
        return keccak256(
            bytes.concat(
                abi.encode(block.chainid, address(tm), id, requester, r.algorithmHash),
                abi.encode(r.datasetIds, versions, roots, r.participants),
                abi.encode(r.paramsHash, r.resultRecipient, r.deadline, r.epsilon, createdAt, r.minSurvivors)
            )
        );
    }

    function test_requestHash_storedEmittedAndRecomputable() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        bytes32 expected = _hashOf(1, r, dave, uint64(block.timestamp));
        vm.expectEmit(true, false, false, true, address(tm));
        emit TaskManager.TaskRequestHashed(1, expected);
        uint256 id = _submit(dave, r);
        assertEq(tm.requestHash(id), expected);
        assertEq(_rh(id), expected, "fixture formula agrees");
    }

    function test_requestHash_unknownTaskReverts() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownTask.selector, 9));
        tm.requestHash(9);
    }

    function test_approve_wrongRequestHashReverts() public {
        uint256 id = _submitStd();
        bytes32 wrong = keccak256("another request");
        vm.expectRevert(abi.encodeWithSelector(TaskManager.RequestHashMismatch.selector, id, _rh(id), wrong));
        vm.prank(bob);
        tm.approve(id, wrong);
        assertEq(tm.task(id).approvals, 0);
    }

    /// Attack: bob signs an approval of task 1 = request A; the chain reorgs (or the devnet is
    /// reset and redeployed at the same address) and task 1 is now request B. Relaying bob's
    /// signature must not approve B.
    function test_approveBySig_sameIdDifferentRequestAfterReorgRejected() public {
        uint256 snap = vm.snapshotState();
        uint256 idA = _submitStd();
        bytes32 hashA = _rh(idA);
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _signApproval(bobKey, idA, bob, 0, deadline);
        tm.approveBySig(idA, hashA, bob, 0, deadline, sig); // valid where it was meant

        vm.revertToState(snap);
        TaskManager.TaskRequest memory b = _stdRequest();
        b.paramsHash = keccak256("exact aggregates, please");
        uint256 idB = _submit(dave, b);
        assertEq(idB, idA, "same task id after the reorg");
        assertTrue(_rh(idB) != hashA);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.RequestHashMismatch.selector, idB, _rh(idB), hashA));
        tm.approveBySig(idB, hashA, bob, 0, deadline, sig);
        // claiming B's hash instead breaks the signature
        vm.expectRevert();
        tm.approveBySig(idB, _rh(idB), bob, 0, deadline, sig);
        assertEq(tm.task(idB).approvals, 0);
    }

    /// Same id, same contract, same request fields but submitted a second later: still distinct.
    function test_requestHash_differsForIdenticalRequestAtAnotherTime() public {
        uint256 snap = vm.snapshotState();
        TaskManager.TaskRequest memory r = _stdRequest();
        uint256 first = _submit(dave, r);
        bytes32 h1 = tm.requestHash(first);
        vm.revertToState(snap);
        vm.warp(block.timestamp + 1);
        uint256 again = _submit(dave, r);
        assertEq(again, first);
        assertTrue(tm.requestHash(again) != h1);
    }

    function testFuzz_requestHash_bindsParamsAndEpsilon(bytes32 params, uint64 eps) public {
        eps = uint64(bound(eps, 0, 10 * EPS));
        TaskManager.TaskRequest memory r = _stdRequest();
        r.paramsHash = params;
        r.epsilon = eps;
        uint256 id = _submit(dave, r);
        assertEq(tm.requestHash(id), _hashOf(id, r, dave, uint64(block.timestamp)));
        // an approval naming the standard request's hash does not land on this one
        TaskManager.TaskRequest memory std = _stdRequest();
        bytes32 stdHash = _hashOf(id, std, dave, uint64(block.timestamp));
        if (stdHash == tm.requestHash(id)) return; // the fuzzer picked the standard request itself
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.RequestHashMismatch.selector, id, tm.requestHash(id), stdHash)
        );
        vm.prank(alice);
        tm.approve(id, stdHash);
        assertEq(uint8(tm.task(id).status), uint8(PcnTypes.TaskStatus.Pending));
    }
}
