// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {stdError} from "forge-std/Test.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {AlgorithmRegistry} from "../src/AlgorithmRegistry.sol";
import {Consortium} from "../src/Consortium.sol";
import {TaskManager} from "../src/TaskManager.sol";

contract AlgorithmRegistryTest is PcnFixture {
    bytes32 internal constant STATS = keccak256("pcn/algorithms/stats@2.1.0");
    bytes32 internal constant DESC = keccak256("stats description");

    event AlgorithmRegistered(
        bytes32 indexed codeHash, address indexed publisher, string kind, string version, bytes32 descriptionHash
    );
    event AlgorithmDeprecated(bytes32 indexed codeHash, address indexed by);

    function test_constructor_wiring() public view {
        assertEq(address(algos.consortium()), address(consortium));
        assertEq(algos.MAX_LABEL_BYTES(), 32);
    }

    function test_register_happyPath() public {
        vm.warp(T0 + 77);
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmRegistered(STATS, bob, "stats", "2.1.0", DESC);
        vm.prank(bob);
        algos.register(STATS, "stats", "2.1.0", DESC);

        AlgorithmRegistry.Algorithm memory a = algos.algorithm(STATS);
        assertEq(a.publisher, bob);
        assertEq(a.kind, "stats");
        assertEq(a.version, "2.1.0");
        assertEq(a.descriptionHash, DESC);
        assertEq(a.registeredAt, T0 + 77);
        assertFalse(a.deprecated);
        assertEq(algos.algorithmCount(), 2);
        assertEq(algos.algorithmAt(0), ALGO);
        assertEq(algos.algorithmAt(1), STATS);
        assertFalse(a.approved);
        assertFalse(algos.isUsable(STATS)); // a proposal until the admin approves it
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmNotApproved.selector, STATS));
        algos.requireUsable(STATS);
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmRegistry.AlgorithmApproved(STATS, admin, false);
        vm.prank(admin);
        algos.approve(STATS, false);
        assertTrue(algos.isUsable(STATS));
        algos.requireUsable(STATS);
        assertFalse(algos.isDropoutTolerant(STATS));
    }

    function test_algorithmAt_outOfBoundsPanics() public {
        vm.expectRevert(stdError.indexOOBError);
        algos.algorithmAt(1);
    }

    function test_algorithm_unknownIsEmpty() public view {
        AlgorithmRegistry.Algorithm memory a = algos.algorithm(STATS);
        assertEq(a.publisher, address(0));
        assertFalse(algos.isUsable(STATS));
    }

    function test_register_labelBoundsInclusive() public {
        vm.prank(bob);
        algos.register(STATS, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv", DESC);
        assertEq(bytes(algos.algorithm(STATS).kind).length, 32);
        assertEq(bytes(algos.algorithm(STATS).version).length, 32);
    }

    function test_register_nonMemberReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        algos.register(STATS, "stats", "1", DESC);
    }

    function test_register_suspendedReverts() public {
        _suspend(bob);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(bob);
        algos.register(STATS, "stats", "1", DESC);
    }

    function test_register_zeroHashReverts() public {
        vm.expectRevert(AlgorithmRegistry.ZeroCodeHash.selector);
        vm.prank(bob);
        algos.register(bytes32(0), "stats", "1", DESC);
    }

    function test_register_duplicateReverts() public {
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmAlreadyRegistered.selector, ALGO));
        vm.prank(bob);
        algos.register(ALGO, "psi", "1.0.0", DESC);
    }

    function test_register_duplicateOfDeprecatedReverts() public {
        vm.prank(alice);
        algos.deprecate(ALGO);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmAlreadyRegistered.selector, ALGO));
        vm.prank(alice);
        algos.register(ALGO, "psi", "1.0.1", DESC);
    }

    function test_register_invalidLabelsRevert() public {
        vm.startPrank(bob);
        vm.expectRevert(AlgorithmRegistry.InvalidAlgorithmLabel.selector);
        algos.register(STATS, "", "1", DESC);
        vm.expectRevert(AlgorithmRegistry.InvalidAlgorithmLabel.selector);
        algos.register(STATS, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", "1", DESC); // 33 bytes
        vm.expectRevert(AlgorithmRegistry.InvalidAlgorithmLabel.selector);
        algos.register(STATS, "stats", "", DESC);
        vm.expectRevert(AlgorithmRegistry.InvalidAlgorithmLabel.selector);
        algos.register(STATS, "stats", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv", DESC); // 33 bytes
        vm.stopPrank();
        assertEq(algos.algorithmCount(), 1);
    }

    function test_deprecate_byPublisher() public {
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmDeprecated(ALGO, alice);
        vm.prank(alice);
        algos.deprecate(ALGO);
        assertTrue(algos.algorithm(ALGO).deprecated);
        assertFalse(algos.isUsable(ALGO));
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmIsDeprecated.selector, ALGO));
        algos.requireUsable(ALGO);
    }

    function test_deprecate_byAdmin() public {
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmDeprecated(ALGO, admin);
        vm.prank(admin);
        algos.deprecate(ALGO);
        assertTrue(algos.algorithm(ALGO).deprecated);
    }

    function test_deprecate_byOtherOrgReverts() public {
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.NotAlgorithmPublisher.selector, ALGO, bob));
        vm.prank(bob);
        algos.deprecate(ALGO);
        assertTrue(algos.isUsable(ALGO));
    }

    function test_deprecate_unknownReverts() public {
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.UnknownAlgorithm.selector, STATS));
        vm.prank(alice);
        algos.deprecate(STATS);
    }

    function test_deprecate_twiceReverts() public {
        vm.prank(alice);
        algos.deprecate(ALGO);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmIsDeprecated.selector, ALGO));
        vm.prank(admin);
        algos.deprecate(ALGO);
    }

    function test_requireUsable_unknownReverts() public {
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.UnknownAlgorithm.selector, STATS));
        algos.requireUsable(STATS);
    }

    // ------------------------------------------------------------------ #13.7 governance

    /// A squatter registers a hash under a false kind: nothing can use it, the admin revokes
    /// it and the right publisher registers it again, which the admin approves.
    function test_squattedHash_unusableThenRevokedAndRegisteredCorrectly() public {
        vm.prank(bob);
        algos.register(STATS, "fedavg", "9.9.9", DESC); // squatted with a false kind
        vm.prank(alice);
        datasets.setAlgorithmAllowed(dsA, STATS, true);
        vm.prank(bob);
        datasets.setAlgorithmAllowed(dsB, STATS, true);
        vm.prank(carol);
        datasets.setAlgorithmAllowed(dsC, STATS, true);
        TaskManager.TaskRequest memory r = _stdRequest();
        r.algorithmHash = STATS;
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmNotApproved.selector, STATS));
        vm.prank(dave);
        tm.submit(r);
        // only the admin approves or revokes
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.NotConsortiumAdmin.selector, bob));
        vm.prank(bob);
        algos.approve(STATS, true);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.NotConsortiumAdmin.selector, alice));
        vm.prank(alice);
        algos.revoke(STATS);
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmRegistry.AlgorithmRevoked(STATS, admin);
        vm.prank(admin);
        algos.revoke(STATS);
        assertEq(algos.algorithm(STATS).publisher, address(0));
        vm.prank(alice);
        algos.register(STATS, "stats", "2.1.0", DESC);
        vm.prank(admin);
        algos.approve(STATS, false);
        assertEq(algos.algorithm(STATS).kind, "stats");
        assertEq(algos.algorithmCount(), 2); // listed once
        vm.prank(dave);
        tm.submit(r);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmAlreadyApproved.selector, STATS));
        vm.prank(admin);
        algos.approve(STATS, true);
    }

    function test_undeprecate_byAdminOnly() public {
        vm.prank(alice);
        algos.deprecate(ALGO);
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.NotConsortiumAdmin.selector, alice));
        vm.prank(alice);
        algos.undeprecate(ALGO);
        vm.expectEmit(true, true, false, true, address(algos));
        emit AlgorithmRegistry.AlgorithmUndeprecated(ALGO, admin);
        vm.prank(admin);
        algos.undeprecate(ALGO);
        assertTrue(algos.isUsable(ALGO));
        vm.expectRevert(abi.encodeWithSelector(AlgorithmRegistry.AlgorithmNotDeprecated.selector, ALGO));
        vm.prank(admin);
        algos.undeprecate(ALGO);
    }

    function test_suspendedPublisherCannotDeprecate() public {
        vm.prank(admin);
        consortium.suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        algos.deprecate(ALGO);
        assertTrue(algos.isUsable(ALGO));
    }

    function test_suspendedRequesterCannotCancel() public {
        uint256 id = _submitStd();
        vm.prank(admin);
        consortium.suspend(dave);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, dave));
        vm.prank(dave);
        tm.cancel(id);
    }

    function testFuzz_onlyApprovedIsUsable(bytes32 codeHash, bool approve_, bool deprecate_) public {
        vm.assume(codeHash != bytes32(0) && codeHash != ALGO);
        vm.prank(bob);
        algos.register(codeHash, "stats", "1", DESC);
        if (approve_) {
            vm.prank(admin);
            algos.approve(codeHash, false);
        }
        if (deprecate_) {
            vm.prank(bob);
            algos.deprecate(codeHash);
        }
        assertEq(algos.isUsable(codeHash), approve_ && !deprecate_);
    }
}
