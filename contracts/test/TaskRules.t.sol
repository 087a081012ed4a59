// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {DatasetRegistry} from "../src/DatasetRegistry.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// @notice #13.6 (a): owners constrain what a task over their dataset does.
contract TaskRulesTest is PcnFixture {
    function _rules(uint64 floor, uint64 ceiling, uint32 maxKeys, bool listed)
        internal
        pure
        returns (DatasetRegistry.TaskRules memory)
    {
        return DatasetRegistry.TaskRules({
            epsilonFloor: floor, epsilonCeiling: ceiling, maxKeys: maxKeys, participantsListed: listed
        });
    }

    function _setRules(uint256 id, DatasetRegistry.TaskRules memory rules) internal {
        vm.prank(datasets.ownerOf(id));
        datasets.setTaskRules(id, rules);
    }

    function _allow(uint256 id, address participant) internal {
        vm.prank(datasets.ownerOf(id));
        datasets.setParticipantAllowed(id, participant, true);
    }

    function test_setTaskRules_storesAndEmits() public {
        vm.expectEmit(true, false, false, true, address(datasets));
        emit DatasetRegistry.TaskRulesSet(dsA, EPS / 2, 2 * EPS, 100, true);
        _setRules(dsA, _rules(EPS / 2, 2 * EPS, 100, true));
        DatasetRegistry.TaskRules memory r = datasets.taskRules(dsA);
        assertEq(r.epsilonFloor, EPS / 2);
        assertEq(r.epsilonCeiling, 2 * EPS);
        assertEq(r.maxKeys, 100);
        assertTrue(r.participantsListed);
    }

    function test_setTaskRules_ownerOnlyAndConsistent() public {
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        vm.prank(bob);
        datasets.setTaskRules(dsA, _rules(EPS, 0, 0, false));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.InvalidTaskRules.selector, 2 * EPS, EPS));
        vm.prank(alice);
        datasets.setTaskRules(dsA, _rules(2 * EPS, EPS, 0, false));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        vm.prank(bob);
        datasets.setParticipantAllowed(dsA, bob, true);
    }

    /// Attack: a task with no DP (ε = 0) over a DP-only dataset.
    function test_dpOnlyDataset_taskWithoutEpsilonRefusedAtSubmit() public {
        _setRules(dsA, _rules(EPS / 2, 0, 0, false));
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB), _addrs(alice, bob), 0);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.EpsilonBelowFloor.selector, dsA, 0, EPS / 2));
        vm.prank(dave);
        tm.submit(r);
        r.epsilon = EPS / 2;
        _submit(dave, r); // at the floor: fine
    }

    function test_epsilonAboveCeilingRefused() public {
        _setRules(dsB, _rules(0, EPS, 0, false));
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB), _addrs(alice, bob), EPS + 1);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.EpsilonAboveCeiling.selector, dsB, EPS + 1, EPS));
        vm.prank(dave);
        tm.submit(r);
    }

    /// Rules set after submission hold at authorisation: nothing is consumed.
    function test_rulesTightenedAfterSubmitEnforcedAtAuthorisation() public {
        uint256 id = _submit(dave, _request(_ids(dsA, dsB), _addrs(alice, bob), EPS / 4));
        _setRules(dsA, _rules(EPS / 2, 0, 0, false));
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.EpsilonBelowFloor.selector, dsA, EPS / 4, EPS / 2));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        assertEq(_uses(dsA), 0);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Pending));
    }

    /// Attack: a participant the owner did not name joins the task.
    function test_participantNotOnAllowListBlocksAuthorisation() public {
        _setRules(dsA, _rules(0, 0, 0, true));
        _allow(dsA, alice);
        _allow(dsA, bob);
        uint256 id = _submitStd(); // alice, bob, carol
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.ParticipantNotAllowed.selector, dsA, carol));
        vm.prank(carol);
        tm.approve(id, _rh(id));
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Pending));
        assertEq(_uses(dsA), 0);

        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetRegistry.PolicyParticipantSet(dsA, carol, true);
        _allow(dsA, carol);
        vm.prank(carol);
        tm.approve(id, _rh(id));
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Authorised));
    }

    function test_unlistedDatasetAcceptsAnyActiveParticipant() public {
        datasets.checkParticipants(dsA, _addrs(alice, bob, carol));
        _setRules(dsA, _rules(0, 0, 0, true));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.ParticipantNotAllowed.selector, dsA, alice));
        datasets.checkParticipants(dsA, _addrs(alice));
    }

    function testFuzz_epsilonRules(uint64 floor, uint64 ceiling, uint64 eps) public {
        floor = uint64(bound(floor, 0, 10 * EPS));
        ceiling = uint64(bound(ceiling, 0, 10 * EPS));
        eps = uint64(bound(eps, 0, 20 * EPS));
        if (ceiling != 0 && ceiling < floor) {
            vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.InvalidTaskRules.selector, floor, ceiling));
            vm.prank(alice);
            datasets.setTaskRules(dsA, _rules(floor, ceiling, 0, false));
            return;
        }
        _setRules(dsA, _rules(floor, ceiling, 0, false));
        TaskManager.TaskRequest memory r = _request(_ids(dsA), _addrs(alice), eps);
        bool ok = eps >= floor && (ceiling == 0 || eps <= ceiling);
        if (eps < floor) {
            vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.EpsilonBelowFloor.selector, dsA, eps, floor));
        } else if (!ok) {
            vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.EpsilonAboveCeiling.selector, dsA, eps, ceiling));
        }
        vm.prank(dave);
        uint256 id = tm.submit(r);
        if (ok) {
            _remember(id);
            _approveAll(id);
            assertEq(_spent(dsA), eps);
        }
    }
}
