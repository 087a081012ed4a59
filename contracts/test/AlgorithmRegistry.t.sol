// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {stdError} from "forge-std/Test.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {AlgorithmRegistry} from "../src/AlgorithmRegistry.sol";
import {Consortium} from "../src/Consortium.sol";

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
        assertTrue(algos.isUsable(STATS));
        algos.requireUsable(STATS);
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
}
