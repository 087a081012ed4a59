// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// A participant that stops answering mid-protocol: the result recipient reports it dropped
/// and the task completes on the others' receipts.
contract DropoutTest is PcnFixture {
    /// The standard 3-party task with alice (a participant) as result recipient, running.
    function _running() internal returns (uint256 id) {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = alice;
        id = _submit(dave, r);
        _approveAll(id);
        _startAll(id);
    }

    function test_dropout_thenSurvivorsComplete() public {
        uint256 id = _running();
        vm.expectEmit(true, true, true, true, address(tm));
        emit TaskManager.ParticipantDropped(id, carol, alice);
        vm.prank(alice);
        tm.reportDropout(id, carol);
        assertEq(uint8(_pstate(id, carol)), uint8(PcnTypes.ParticipantState.Dropped));
        assertEq(tm.droppedCount(id), 1);
        _submitReceipt(id, alice, RESULT, ALGO);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Running));
        vm.expectEmit(true, false, false, true, address(tm));
        emit TaskManager.TaskCompleted(id, RESULT);
        _submitReceipt(id, bob, RESULT, ALGO);
        assertEq(tm.task(id).resultHash, RESULT);
    }

    function test_dropout_afterOthersReceipted_thenRecipientReceiptCompletes() public {
        uint256 id = _running();
        _submitReceipt(id, bob, RESULT, ALGO);
        vm.prank(alice);
        tm.reportDropout(id, carol);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Running));
        _submitReceipt(id, alice, RESULT, ALGO);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Completed));
        // once the recipient has receipted it can report nobody
        uint256 id2 = _running();
        _submitReceipt(id2, alice, RESULT, ALGO);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotStarted.selector, id2, alice));
        tm.reportDropout(id2, carol);
    }

    function test_dropout_survivorsMustStillAgree() public {
        uint256 id = _running();
        vm.prank(alice);
        tm.reportDropout(id, carol);
        _submitReceipt(id, alice, RESULT, ALGO);
        _submitReceipt(id, bob, keccak256("other"), ALGO);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Disputed));
    }

    function test_dropout_droppedPartyCannotReceiptOrRefuse() public {
        uint256 id = _running();
        vm.prank(alice);
        tm.reportDropout(id, carol);
        TaskManager.Receipt memory rc = _receipt(RESULT, ALGO);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyFinished.selector, id, carol));
        tm.submitReceipt(id, rc);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyFinished.selector, id, carol));
        tm.refuse(id, 1, keccak256("late"));
    }

    function test_dropout_onlyTheRecipientReports() public {
        uint256 id = _running();
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotResultRecipient.selector, id, bob));
        tm.reportDropout(id, carol);
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotParticipant.selector, id, outsider));
        tm.reportDropout(id, carol);
    }

    function test_dropout_notSelfNotTwiceNotUnstarted() public {
        uint256 id = _running();
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.CannotDrop.selector, id, alice, PcnTypes.ParticipantState.Started)
        );
        tm.reportDropout(id, alice);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.CannotDrop.selector, id, outsider, PcnTypes.ParticipantState.None)
        );
        tm.reportDropout(id, outsider);
        vm.prank(alice);
        tm.reportDropout(id, carol);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.CannotDrop.selector, id, carol, PcnTypes.ParticipantState.Dropped)
        );
        tm.reportDropout(id, carol);
    }

    function test_dropout_atLeastTwoRemain() public {
        uint256 id = _running();
        vm.prank(alice);
        tm.reportDropout(id, carol);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TooFewRemaining.selector, id));
        tm.reportDropout(id, bob);
    }

    function test_dropout_onlyWhileRunningAndBeforeTheDeadline() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = alice;
        uint256 id = _submit(dave, r);
        _approveAll(id);
        vm.prank(alice);
        tm.start(id);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.CannotDrop.selector, id, carol, PcnTypes.ParticipantState.Invited)
        );
        tm.reportDropout(id, carol); // carol never started: not a dropout but a no-show
        _startAll2(id);
        uint64 deadline = tm.task(id).deadline;
        vm.warp(deadline + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TaskDeadlinePassed.selector, id, deadline));
        tm.reportDropout(id, carol);
    }

    function _startAll2(uint256 id) internal {
        vm.prank(bob);
        tm.start(id);
        vm.prank(carol);
        tm.start(id);
    }
}
