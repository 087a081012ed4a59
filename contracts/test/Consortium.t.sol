// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {stdError} from "forge-std/Test.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {PcnFixture} from "./utils/PcnFixture.sol";
import {Consortium} from "../src/Consortium.sol";
import {PcnTypes} from "../src/PcnTypes.sol";

contract ConsortiumTest is PcnFixture {
    bytes32 internal constant KEY = keccak256("erin-x25519");
    string internal constant ENDPOINT = "https://erin.example/mailbox";

    address internal erin;

    event OrganisationAdmitted(address indexed account, string name, bytes32 encryptionKey, string endpoint);
    event OrganisationSuspended(address indexed account, address indexed by);
    event OrganisationReinstated(address indexed account, address indexed by);
    event OrganisationEndpointUpdated(address indexed account, string endpoint);
    event OrganisationKeyUpdated(address indexed account, bytes32 encryptionKey);

    function setUp() public override {
        super.setUp();
        erin = makeAddr("erin");
    }

    function _bytesString(uint256 len) internal pure returns (string memory) {
        bytes memory b = new bytes(len);
        for (uint256 i = 0; i < len; ++i) {
            b[i] = "a";
        }
        return string(b);
    }

    // ------------------------------------------------------------------ constructor / roles

    function test_constructor_grantsAdminRole() public view {
        assertTrue(consortium.hasRole(consortium.DEFAULT_ADMIN_ROLE(), admin));
        assertFalse(consortium.hasRole(consortium.DEFAULT_ADMIN_ROLE(), address(this)));
        assertEq(consortium.AUDITOR_ROLE(), keccak256("pcn.AUDITOR_ROLE"));
        assertEq(consortium.MAX_NAME_BYTES(), 64);
        assertEq(consortium.MAX_ENDPOINT_BYTES(), 256);
    }

    function test_constructor_revertsOnZeroAdmin() public {
        vm.expectRevert(Consortium.ZeroAccount.selector);
        new Consortium(address(0));
    }

    function test_adminGrantsAuditorRole() public {
        address auditor = makeAddr("auditor");
        bytes32 role = consortium.AUDITOR_ROLE();
        vm.prank(admin);
        consortium.grantRole(role, auditor);
        assertTrue(consortium.hasRole(role, auditor));
    }

    function test_grantRole_nonAdminReverts() public {
        bytes32 role = consortium.AUDITOR_ROLE();
        bytes32 adminRole = consortium.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, adminRole)
        );
        vm.prank(alice);
        consortium.grantRole(role, alice);
    }

    // ------------------------------------------------------------------ admit

    function test_admit_storesRecordAndEmits() public {
        vm.warp(T0 + 123);
        uint256 countBefore = consortium.organisationCount();
        vm.expectEmit(true, false, false, true, address(consortium));
        emit OrganisationAdmitted(erin, "Erin Clinic", KEY, ENDPOINT);
        vm.prank(admin);
        consortium.admit(erin, "Erin Clinic", KEY, ENDPOINT);

        Consortium.Organisation memory o = consortium.organisation(erin);
        assertEq(o.name, "Erin Clinic");
        assertEq(o.encryptionKey, KEY);
        assertEq(o.endpoint, ENDPOINT);
        assertEq(uint8(o.status), uint8(PcnTypes.OrgStatus.Active));
        assertEq(o.admittedAt, T0 + 123);
        assertEq(o.statusChangedAt, T0 + 123);
        assertEq(consortium.organisationCount(), countBefore + 1);
        assertEq(consortium.organisationAt(countBefore), erin);
        assertTrue(consortium.isActive(erin));
        consortium.requireActive(erin);
    }

    function test_admit_fixtureOrder() public view {
        assertEq(consortium.organisationCount(), 4);
        assertEq(consortium.organisationAt(0), alice);
        assertEq(consortium.organisationAt(1), bob);
        assertEq(consortium.organisationAt(2), carol);
        assertEq(consortium.organisationAt(3), dave);
    }

    function test_organisationAt_outOfBoundsPanics() public {
        vm.expectRevert(stdError.indexOOBError);
        consortium.organisationAt(4);
    }

    function test_organisation_unknownIsEmpty() public view {
        Consortium.Organisation memory o = consortium.organisation(erin);
        assertEq(uint8(o.status), uint8(PcnTypes.OrgStatus.None));
        assertEq(bytes(o.name).length, 0);
        assertEq(o.admittedAt, 0);
        assertFalse(consortium.isActive(erin));
    }

    function test_admit_nonAdminReverts() public {
        bytes32 adminRole = consortium.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, adminRole)
        );
        vm.prank(alice);
        consortium.admit(erin, "Erin", KEY, ENDPOINT);
    }

    function test_admit_auditorIsNotAdmin() public {
        address auditor = makeAddr("auditor");
        bytes32 role = consortium.AUDITOR_ROLE();
        bytes32 adminRole = consortium.DEFAULT_ADMIN_ROLE();
        vm.prank(admin);
        consortium.grantRole(role, auditor);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, auditor, adminRole)
        );
        vm.prank(auditor);
        consortium.admit(erin, "Erin", KEY, ENDPOINT);
    }

    function test_admit_zeroAccountReverts() public {
        vm.expectRevert(Consortium.ZeroAccount.selector);
        vm.prank(admin);
        consortium.admit(address(0), "Zero", KEY, ENDPOINT);
    }

    function test_admit_twiceReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationAlreadyAdmitted.selector, alice));
        vm.prank(admin);
        consortium.admit(alice, "Alice again", KEY, ENDPOINT);
    }

    function test_admit_suspendedCannotBeReadmitted() public {
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationAlreadyAdmitted.selector, alice));
        vm.prank(admin);
        consortium.admit(alice, "Alice again", KEY, ENDPOINT);
    }

    function test_admit_nameBounds() public {
        vm.startPrank(admin);
        vm.expectRevert(Consortium.InvalidOrganisationName.selector);
        consortium.admit(erin, "", KEY, ENDPOINT);
        vm.expectRevert(Consortium.InvalidOrganisationName.selector);
        consortium.admit(erin, _bytesString(65), KEY, ENDPOINT);
        consortium.admit(erin, _bytesString(64), KEY, ENDPOINT);
        vm.stopPrank();
        assertEq(consortium.organisation(erin).name, _bytesString(64));
    }

    function test_admit_endpointBounds() public {
        vm.startPrank(admin);
        vm.expectRevert(Consortium.InvalidEndpoint.selector);
        consortium.admit(erin, "Erin", KEY, "");
        vm.expectRevert(Consortium.InvalidEndpoint.selector);
        consortium.admit(erin, "Erin", KEY, _bytesString(257));
        consortium.admit(erin, "Erin", KEY, _bytesString(256));
        vm.stopPrank();
        assertEq(bytes(consortium.organisation(erin).endpoint).length, 256);
    }

    function test_admit_zeroKeyReverts() public {
        vm.expectRevert(Consortium.InvalidEncryptionKey.selector);
        vm.prank(admin);
        consortium.admit(erin, "Erin", bytes32(0), ENDPOINT);
    }

    // ------------------------------------------------------------------ suspend / reinstate

    function test_suspend_happyPath() public {
        vm.warp(T0 + 500);
        vm.expectEmit(true, true, false, true, address(consortium));
        emit OrganisationSuspended(bob, admin);
        _suspend(bob);
        Consortium.Organisation memory o = consortium.organisation(bob);
        assertEq(uint8(o.status), uint8(PcnTypes.OrgStatus.Suspended));
        assertEq(o.statusChangedAt, T0 + 500);
        assertEq(o.admittedAt, T0);
        assertFalse(consortium.isActive(bob));
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        consortium.requireActive(bob);
    }

    function test_suspend_nonAdminReverts() public {
        bytes32 adminRole = consortium.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, adminRole)
        );
        vm.prank(alice);
        consortium.suspend(bob);
    }

    function test_suspend_unknownReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotAdmitted.selector, erin));
        vm.prank(admin);
        consortium.suspend(erin);
    }

    function test_suspend_twiceReverts() public {
        _suspend(bob);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationAlreadySuspended.selector, bob));
        vm.prank(admin);
        consortium.suspend(bob);
    }

    function test_reinstate_happyPath() public {
        _suspend(bob);
        vm.warp(T0 + 900);
        vm.expectEmit(true, true, false, true, address(consortium));
        emit OrganisationReinstated(bob, admin);
        _reinstate(bob);
        Consortium.Organisation memory o = consortium.organisation(bob);
        assertEq(uint8(o.status), uint8(PcnTypes.OrgStatus.Active));
        assertEq(o.statusChangedAt, T0 + 900);
        assertTrue(consortium.isActive(bob));
        consortium.requireActive(bob);
    }

    function test_reinstate_nonAdminReverts() public {
        _suspend(bob);
        bytes32 adminRole = consortium.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, bob, adminRole)
        );
        vm.prank(bob);
        consortium.reinstate(bob);
    }

    function test_reinstate_unknownReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotAdmitted.selector, erin));
        vm.prank(admin);
        consortium.reinstate(erin);
    }

    /// Reinstating an organisation that is already active reverts with OrganisationNotActive
    /// (the contract reuses that error for "not suspended").
    function test_reinstate_activeReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, bob));
        vm.prank(admin);
        consortium.reinstate(bob);
    }

    // ------------------------------------------------------------------ self-service updates

    function test_updateEndpoint_happyPath() public {
        vm.expectEmit(true, false, false, true, address(consortium));
        emit OrganisationEndpointUpdated(alice, "https://alice.example/new");
        vm.prank(alice);
        consortium.updateEndpoint("https://alice.example/new");
        assertEq(consortium.organisation(alice).endpoint, "https://alice.example/new");
    }

    function test_updateEndpoint_invalidReverts() public {
        vm.startPrank(alice);
        vm.expectRevert(Consortium.InvalidEndpoint.selector);
        consortium.updateEndpoint("");
        vm.expectRevert(Consortium.InvalidEndpoint.selector);
        consortium.updateEndpoint(_bytesString(257));
        vm.stopPrank();
    }

    function test_updateEndpoint_suspendedOrUnknownReverts() public {
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        consortium.updateEndpoint("https://alice.example/new");
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        consortium.updateEndpoint("https://outsider.example");
    }

    function test_updateEncryptionKey_happyPath() public {
        bytes32 k = keccak256("rotated");
        vm.expectEmit(true, false, false, true, address(consortium));
        emit OrganisationKeyUpdated(alice, k);
        vm.prank(alice);
        consortium.updateEncryptionKey(k);
        assertEq(consortium.organisation(alice).encryptionKey, k);
    }

    function test_updateEncryptionKey_zeroReverts() public {
        vm.expectRevert(Consortium.InvalidEncryptionKey.selector);
        vm.prank(alice);
        consortium.updateEncryptionKey(bytes32(0));
    }

    function test_updateEncryptionKey_suspendedOrUnknownReverts() public {
        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        consortium.updateEncryptionKey(keccak256("k"));
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        consortium.updateEncryptionKey(keccak256("k"));
    }

    function test_requireActive_unknownReverts() public {
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        consortium.requireActive(outsider);
    }

    function test_setDropoutSilence_adminOnlyAndBounded() public {
        assertEq(consortium.dropoutSilence(), consortium.DEFAULT_DROPOUT_SILENCE());
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, alice, consortium.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(alice);
        consortium.setDropoutSilence(1);
        vm.startPrank(admin);
        vm.expectRevert(Consortium.InvalidDropoutSilence.selector);
        consortium.setDropoutSilence(0);
        vm.expectRevert(Consortium.InvalidDropoutSilence.selector);
        consortium.setDropoutSilence(1 days + 1);
        vm.expectEmit(false, true, false, true, address(consortium));
        emit Consortium.DropoutSilenceSet(600, admin);
        consortium.setDropoutSilence(600);
        vm.stopPrank();
        assertEq(consortium.dropoutSilence(), 600);
    }
}
