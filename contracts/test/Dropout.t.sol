// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

/// A participant that stops answering mid-protocol: the result recipient reports it dropped
/// and the task completes on the others' receipts (dropout-tolerant algorithms only, after the
/// consortium's silence period, never below the request's minSurvivors).
contract DropoutTest is PcnFixture {
    function setUp() public virtual override {
        super.setUp();
        // The fixture's algorithm, re-registered as the dropout-tolerant kind it stands for here.
        vm.prank(admin);
        algos.revoke(ALGO);
        vm.prank(alice);
        algos.register(ALGO, "fedavg", "1.0.0", keccak256("fedavg description"));
        vm.prank(admin);
        algos.approve(ALGO, true);
    }

    /// The standard 3-party task with alice (a participant) as result recipient, two of three
    /// needed, running, everyone silent for longer than the consortium's dropout silence.
    function _running() internal returns (uint256 id) {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.resultRecipient = alice;
        r.minSurvivors = 2;
        id = _submit(dave, r);
        _approveAll(id);
        _startAll(id);
        _silence();
    }

    function _silence() internal {
        vm.warp(block.timestamp + consortium.dropoutSilence() + 1);
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
        r.minSurvivors = 2;
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

/// #13.5: a result recipient (dave) and an accomplice (carol) try to finish a task without the
/// owners alice and bob, who approved it: dave drops both and the two post matching receipts.
contract DropoutAttackTest is PcnFixture {
    bytes32 internal constant FAKE = keccak256("fake result");

    /// Datasets A and B; participants alice, bob (owners), carol and dave (no data); dave
    /// requests and receives. Carol and dave consent, the owners approve, everyone starts.
    function _attackTask(uint8 minSurvivors) internal returns (uint256 id) {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB), _members(), EPS);
        r.minSurvivors = minSurvivors;
        id = _submit(dave, r);
        _approveAll(id);
        _startAll(id);
    }

    function _makeTolerant() internal {
        vm.prank(admin);
        algos.revoke(ALGO);
        vm.prank(alice);
        algos.register(ALGO, "fedavg", "1.0.0", keccak256("fedavg"));
        vm.prank(admin);
        algos.approve(ALGO, true);
    }

    function _silence() internal {
        vm.warp(block.timestamp + consortium.dropoutSilence() + 1);
    }

    function test_attack_notDropoutTolerantAlgorithm_reverts() public {
        uint256 id = _attackTask(2);
        _silence();
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlgorithmNotDropoutTolerant.selector, ALGO));
        tm.reportDropout(id, alice);
    }

    function test_attack_belowApprovedSurvivors_reverts() public {
        _makeTolerant();
        uint256 id = _attackTask(4); // the owners approved "everyone must finish"
        _silence();
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TooFewRemaining.selector, id));
        tm.reportDropout(id, alice);
    }

    function test_attack_liveOwnerCannotBeDropped() public {
        _makeTolerant();
        uint256 id = _attackTask(2);
        uint64 silence = consortium.dropoutSilence();
        uint64 started = uint64(block.timestamp);
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.PartyNotSilent.selector, id, alice, started, silence));
        tm.reportDropout(id, alice); // at once: refused
        vm.warp(block.timestamp + silence);
        vm.expectEmit(true, true, false, false, address(tm));
        emit TaskManager.ParticipantHeartbeat(id, alice);
        vm.prank(alice);
        tm.heartbeat(id);
        vm.warp(block.timestamp + 1);
        vm.prank(dave);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.PartyNotSilent.selector, id, alice, uint64(block.timestamp - 1), silence)
        );
        tm.reportDropout(id, alice);
    }

    /// The full scenario with a tolerant algorithm and both owners silent: dave drops both
    /// (the second drop is below the threshold) and a contest makes the task Disputed; the
    /// accomplices' matching receipts can no longer complete it.
    function test_attack_droppedOwnerContests_taskDisputed_neverCompletes() public {
        _makeTolerant();
        uint256 id = _attackTask(3);
        _silence();
        vm.prank(dave);
        tm.reportDropout(id, alice);
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TooFewRemaining.selector, id));
        tm.reportDropout(id, bob);
        vm.expectEmit(true, true, false, false, address(tm));
        emit TaskManager.DropoutContested(id, alice);
        vm.prank(alice);
        tm.contestDropout(id);
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Disputed));
        TaskManager.Receipt memory rc = _receipt(FAKE, ALGO);
        vm.prank(carol);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.InvalidTaskStatus.selector, id, PcnTypes.TaskStatus.Disputed)
        );
        tm.submitReceipt(id, rc);
    }

    function test_contest_onlyByADroppedParty() public {
        _makeTolerant();
        uint256 id = _attackTask(2);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotDropped.selector, id, bob));
        tm.contestDropout(id);
    }

    /// An accomplice the owners approved alongside, but who never consented, blocks nothing
    /// and joins nothing: the task stays Pending until every non-owner participant consents.
    function test_consent_neededFromEveryNonOwner() public {
        TaskManager.TaskRequest memory r = _request(_ids(dsA, dsB), _members(), EPS);
        uint256 id = _submit(dave, r);
        (address[] memory parties,) = tm.taskConsents(id);
        assertEq(parties.length, 2);
        assertEq(parties[0], carol);
        assertEq(parties[1], dave);
        vm.prank(alice);
        tm.approve(id, _rh(id));
        vm.prank(bob);
        tm.approve(id, _rh(id));
        assertEq(uint8(_status(id)), uint8(PcnTypes.TaskStatus.Pending));
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidTaskStatus.selector, id, PcnTypes.TaskStatus.Pending));
        tm.start(id);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotAConsenter.selector, id, alice));
        tm.consent(id);
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotParticipant.selector, id, outsider));
        tm.consent(id);
        vm.expectEmit(true, true, false, false, address(tm));
        emit TaskManager.ParticipantConsented(id, carol);
        vm.prank(carol);
        tm.consent(id);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyConsented.selector, id, carol));
        tm.consent(id);
        vm.expectEmit(true, false, false, false, address(tm));
        emit TaskManager.TaskAuthorised(id);
        vm.prank(dave);
        tm.consent(id);
    }

    function test_minSurvivors_validated() public {
        TaskManager.TaskRequest memory r = _stdRequest();
        r.minSurvivors = 1;
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidMinSurvivors.selector, 1, 3));
        tm.submit(r);
        r.minSurvivors = 4;
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.InvalidMinSurvivors.selector, 4, 3));
        tm.submit(r);
        r.minSurvivors = 2;
        vm.prank(dave);
        uint256 id = tm.submit(r);
        assertEq(tm.minSurvivors(id), 2);
        TaskManager.TaskRequest memory solo = _request(_ids(dsA), _addrs1(alice), EPS);
        solo.minSurvivors = 1; // a one-party task: nobody to drop
        _submit(dave, solo);
    }

    /// Whatever the wait, a dropout is allowed only once the silence has passed.
    function testFuzz_dropout_onlyAfterSilence(uint32 wait) public {
        _makeTolerant();
        uint256 id = _attackTask(2);
        uint64 silence = consortium.dropoutSilence();
        wait = uint32(bound(wait, 0, 3 * silence));
        vm.warp(block.timestamp + wait);
        vm.prank(dave);
        if (wait <= silence) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    TaskManager.PartyNotSilent.selector, id, alice, uint64(block.timestamp - wait), silence
                )
            );
        }
        tm.reportDropout(id, alice);
    }

    function _addrs1(address a) internal pure returns (address[] memory r) {
        r = new address[](1);
        r[0] = a;
    }
}
