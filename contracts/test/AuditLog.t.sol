// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {AuditLog} from "../src/AuditLog.sol";
import {Consortium} from "../src/Consortium.sol";

contract AuditLogTest is PcnFixture {
    event LogAnchored(address indexed org, uint64 indexed sequence, bytes32 headHash);

    function test_constructor_wiring() public view {
        assertEq(address(auditLog.consortium()), address(consortium));
    }

    function test_latest_emptyForNewOrg() public view {
        (AuditLog.Anchor memory a, uint256 count) = auditLog.latest(alice);
        assertEq(count, 0);
        assertEq(a.sequence, 0);
        assertEq(a.headHash, bytes32(0));
        assertEq(a.anchoredAt, 0);
    }

    function test_anchor_happyPath() public {
        vm.warp(T0 + 42);
        vm.expectEmit(true, true, false, true, address(auditLog));
        emit LogAnchored(alice, 7, keccak256("head7"));
        vm.prank(alice);
        auditLog.anchor(7, keccak256("head7"));
        (AuditLog.Anchor memory a, uint256 count) = auditLog.latest(alice);
        assertEq(count, 1);
        assertEq(a.sequence, 7);
        assertEq(a.headHash, keccak256("head7"));
        assertEq(a.anchoredAt, T0 + 42);

        vm.warp(T0 + 100);
        vm.prank(alice);
        auditLog.anchor(8, keccak256("head8"));
        (a, count) = auditLog.latest(alice);
        assertEq(count, 2);
        assertEq(a.sequence, 8);
        assertEq(a.headHash, keccak256("head8"));
        assertEq(a.anchoredAt, T0 + 100);
    }

    function test_anchor_sequenceZeroAllowedFirst() public {
        vm.prank(alice);
        auditLog.anchor(0, keccak256("genesis"));
        (AuditLog.Anchor memory a, uint256 count) = auditLog.latest(alice);
        assertEq(count, 1);
        assertEq(a.sequence, 0);
        // ...but a second anchor at 0 is not increasing
        vm.expectRevert(abi.encodeWithSelector(AuditLog.SequenceNotIncreasing.selector, uint64(0), uint64(0)));
        vm.prank(alice);
        auditLog.anchor(0, keccak256("again"));
    }

    function test_anchor_equalSequenceReverts() public {
        vm.prank(alice);
        auditLog.anchor(10, keccak256("h"));
        vm.expectRevert(abi.encodeWithSelector(AuditLog.SequenceNotIncreasing.selector, uint64(10), uint64(10)));
        vm.prank(alice);
        auditLog.anchor(10, keccak256("h2"));
    }

    function test_anchor_lowerSequenceReverts() public {
        vm.prank(alice);
        auditLog.anchor(10, keccak256("h"));
        vm.expectRevert(abi.encodeWithSelector(AuditLog.SequenceNotIncreasing.selector, uint64(10), uint64(9)));
        vm.prank(alice);
        auditLog.anchor(9, keccak256("h2"));
    }

    function test_anchor_zeroHeadReverts() public {
        vm.expectRevert(AuditLog.ZeroHeadHash.selector);
        vm.prank(alice);
        auditLog.anchor(1, bytes32(0));
    }

    function test_anchor_perOrganisation() public {
        vm.prank(alice);
        auditLog.anchor(100, keccak256("a"));
        // bob's sequence is independent of alice's
        vm.prank(bob);
        auditLog.anchor(1, keccak256("b"));
        (AuditLog.Anchor memory a, uint256 ca) = auditLog.latest(alice);
        (AuditLog.Anchor memory b, uint256 cb) = auditLog.latest(bob);
        assertEq(a.sequence, 100);
        assertEq(b.sequence, 1);
        assertEq(ca, 1);
        assertEq(cb, 1);
    }

    function test_anchor_nonMemberReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        auditLog.anchor(1, keccak256("h"));
    }

    function test_anchor_suspendedReverts() public {
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        auditLog.anchor(1, keccak256("h"));
    }
}
