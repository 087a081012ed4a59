// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {PcnFixture} from "./utils/PcnFixture.sol";
import {DatasetRegistry} from "../src/DatasetRegistry.sol";
import {Consortium} from "../src/Consortium.sol";

contract DatasetRegistryTest is PcnFixture {
    bytes32 internal constant OTHER_ALGO = keccak256("other algorithm");

    event DatasetRegistered(
        uint256 indexed datasetId,
        address indexed owner,
        uint32 version,
        bytes32 merkleRoot,
        bytes32 schemaHash,
        uint64 rowCount,
        bytes32 metadataHash
    );
    event DatasetVersionPublished(
        uint256 indexed datasetId,
        address indexed owner,
        uint32 version,
        bytes32 merkleRoot,
        bytes32 schemaHash,
        uint64 rowCount,
        bytes32 metadataHash
    );
    event PolicySet(uint256 indexed datasetId, uint64 maxUses, uint64 expiry, uint64 epsilonTotal);
    event PolicyAlgorithmSet(uint256 indexed datasetId, bytes32 indexed algorithmHash, bool allowed);
    event PolicyRequesterSet(uint256 indexed datasetId, address indexed requester, bool allowed);
    event PolicyRecipientSet(uint256 indexed datasetId, address indexed recipient, bool allowed);
    event DatasetUsed(uint256 indexed datasetId, uint256 indexed taskId, uint64 uses, uint64 epsilonSpent);
    event TaskManagerSet(address indexed taskManager);

    function _emptyGrants() internal pure returns (DatasetRegistry.PolicyGrants memory g) {
        g.algorithms = new bytes32[](0);
        g.requesters = new address[](0);
        g.recipients = new address[](0);
    }

    function _consume(uint256 id, uint256 taskId, uint64 eps) internal {
        vm.prank(address(tm));
        datasets.consume(id, taskId, ALGO, dave, dave, eps);
    }

    // ------------------------------------------------------------------ wiring

    function test_constructor_wiring() public view {
        assertEq(address(datasets.consortium()), address(consortium));
        assertEq(datasets.deployer(), address(this));
        assertEq(datasets.taskManager(), address(tm));
        assertEq(datasets.datasetCount(), 3);
    }

    function test_setTaskManager_onceByDeployer() public {
        address deployer = makeAddr("deployer");
        vm.prank(deployer);
        DatasetRegistry fresh = new DatasetRegistry(consortium);
        assertEq(fresh.deployer(), deployer);
        assertEq(fresh.taskManager(), address(0));

        vm.expectRevert(DatasetRegistry.NotDeployer.selector);
        vm.prank(alice);
        fresh.setTaskManager(address(tm));

        vm.expectEmit(false, false, false, true, address(fresh));
        emit TaskManagerSet(address(tm));
        vm.prank(deployer);
        fresh.setTaskManager(address(tm));
        assertEq(fresh.taskManager(), address(tm));

        vm.expectRevert(DatasetRegistry.TaskManagerAlreadySet.selector);
        vm.prank(deployer);
        fresh.setTaskManager(makeAddr("other"));
        assertEq(fresh.taskManager(), address(tm));
    }

    function test_setTaskManager_fixtureAlreadySet() public {
        vm.expectRevert(DatasetRegistry.TaskManagerAlreadySet.selector);
        datasets.setTaskManager(address(this));
    }

    // ------------------------------------------------------------------ register

    function test_register_happyPathAndEvents() public {
        vm.warp(T0 + 10);
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 7 * EPS);
        DatasetRegistry.PolicyGrants memory g = _grants();
        address[] memory m = _members();

        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetRegistered(4, dave, 1, fp.merkleRoot, fp.schemaHash, fp.rowCount, fp.metadataHash);
        vm.expectEmit(true, false, false, true, address(datasets));
        emit PolicySet(4, 5, POLICY_EXPIRY, 7 * EPS);
        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyAlgorithmSet(4, ALGO, true);
        for (uint256 i = 0; i < m.length; ++i) {
            vm.expectEmit(true, true, false, true, address(datasets));
            emit PolicyRequesterSet(4, m[i], true);
        }
        for (uint256 i = 0; i < m.length; ++i) {
            vm.expectEmit(true, true, false, true, address(datasets));
            emit PolicyRecipientSet(4, m[i], true);
        }
        vm.prank(dave);
        uint256 id = datasets.register(fp, lim, g);

        assertEq(id, 4);
        assertEq(datasets.datasetCount(), 4);
        DatasetRegistry.Dataset memory d = datasets.dataset(id);
        assertEq(d.owner, dave);
        assertEq(d.version, 1);
        assertEq(d.maxUses, 5);
        assertEq(d.uses, 0);
        assertEq(d.expiry, POLICY_EXPIRY);
        assertEq(d.epsilonTotal, 7 * EPS);
        assertEq(d.epsilonSpent, 0);
        assertEq(datasets.ownerOf(id), dave);
        assertEq(datasets.currentVersion(id), 1);

        DatasetRegistry.Fingerprint memory stored = datasets.fingerprint(id, 1);
        assertEq(stored.merkleRoot, fp.merkleRoot);
        assertEq(stored.schemaHash, fp.schemaHash);
        assertEq(stored.metadataHash, fp.metadataHash);
        assertEq(stored.rowCount, fp.rowCount);
        assertEq(stored.registeredAt, T0 + 10);

        assertTrue(datasets.algorithmAllowed(id, ALGO));
        assertFalse(datasets.algorithmAllowed(id, OTHER_ALGO));
        assertTrue(datasets.requesterAllowed(id, bob));
        assertFalse(datasets.requesterAllowed(id, outsider));
        assertTrue(datasets.recipientAllowed(id, carol));
        assertFalse(datasets.recipientAllowed(id, outsider));
    }

    function test_register_sequentialIds() public {
        assertEq(dsA, 1);
        assertEq(dsB, 2);
        assertEq(dsC, 3);
        uint256 id = _registerDataset(alice, 1, 1, "A2");
        assertEq(id, 4);
    }

    function test_register_emptyGrantsDenyByDefault() public {
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);
        DatasetRegistry.PolicyGrants memory g = _emptyGrants();
        vm.prank(dave);
        uint256 id = datasets.register(fp, lim, g);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.AlgorithmNotAllowed.selector, id, ALGO));
        datasets.checkUse(id, ALGO, dave, dave, 0);
    }

    function test_register_nonMemberReverts() public {
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);
        DatasetRegistry.PolicyGrants memory g = _grants();
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, outsider));
        vm.prank(outsider);
        datasets.register(fp, lim, g);
    }

    function test_register_suspendedReverts() public {
        _suspend(dave);
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);
        DatasetRegistry.PolicyGrants memory g = _grants();
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, dave));
        vm.prank(dave);
        datasets.register(fp, lim, g);
    }

    function test_register_invalidFingerprintReverts() public {
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);
        DatasetRegistry.PolicyGrants memory g = _grants();
        DatasetRegistry.Fingerprint memory noRoot = _fp("D");
        noRoot.merkleRoot = bytes32(0);
        DatasetRegistry.Fingerprint memory noSchema = _fp("D");
        noSchema.schemaHash = bytes32(0);

        vm.startPrank(dave);
        vm.expectRevert(DatasetRegistry.InvalidFingerprint.selector);
        datasets.register(noRoot, lim, g);
        vm.expectRevert(DatasetRegistry.InvalidFingerprint.selector);
        datasets.register(noSchema, lim, g);
        vm.stopPrank();
        assertEq(datasets.datasetCount(), 3);
    }

    function test_register_tooManyPolicyEntries() public {
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);

        DatasetRegistry.PolicyGrants memory g = _emptyGrants();
        g.algorithms = new bytes32[](33);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.TooManyPolicyEntries.selector, 33, 32));
        vm.prank(dave);
        datasets.register(fp, lim, g);

        g = _emptyGrants();
        g.requesters = new address[](33);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.TooManyPolicyEntries.selector, 33, 32));
        vm.prank(dave);
        datasets.register(fp, lim, g);

        g = _emptyGrants();
        g.recipients = new address[](40);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.TooManyPolicyEntries.selector, 40, 32));
        vm.prank(dave);
        datasets.register(fp, lim, g);

        assertEq(datasets.datasetCount(), 3);
    }

    function test_register_maxPolicyEntriesAccepted() public {
        DatasetRegistry.Fingerprint memory fp = _fp("D");
        DatasetRegistry.PolicyLimits memory lim = _limits(5, 5 * EPS);
        DatasetRegistry.PolicyGrants memory g;
        g.algorithms = new bytes32[](32);
        g.requesters = new address[](32);
        g.recipients = new address[](32);
        for (uint256 i = 0; i < 32; ++i) {
            g.algorithms[i] = keccak256(abi.encode(i));
            // forge-lint: disable-next-line(unsafe-typecast) -- small constants fit in 160 bits
            g.requesters[i] = address(uint160(0x1000 + i));
            // forge-lint: disable-next-line(unsafe-typecast) -- small constants fit in 160 bits
            g.recipients[i] = address(uint160(0x2000 + i));
        }
        vm.prank(dave);
        uint256 id = datasets.register(fp, lim, g);
        assertTrue(datasets.algorithmAllowed(id, keccak256(abi.encode(uint256(31)))));
        assertTrue(datasets.requesterAllowed(id, address(uint160(0x1000 + 31))));
        assertTrue(datasets.recipientAllowed(id, address(uint160(0x2000 + 31))));
    }

    // ------------------------------------------------------------------ versions

    function test_publishVersion_happyPath() public {
        vm.warp(T0 + 99);
        DatasetRegistry.Fingerprint memory fp2 = _fp("A-v2");
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetVersionPublished(dsA, alice, 2, fp2.merkleRoot, fp2.schemaHash, fp2.rowCount, fp2.metadataHash);
        vm.prank(alice);
        uint32 v = datasets.publishVersion(dsA, fp2);
        assertEq(v, 2);
        assertEq(datasets.currentVersion(dsA), 2);
        assertEq(datasets.dataset(dsA).version, 2);
        // old version still readable and unchanged
        assertEq(datasets.fingerprint(dsA, 1).merkleRoot, _fp("A").merkleRoot);
        assertEq(datasets.fingerprint(dsA, 1).registeredAt, T0);
        assertEq(datasets.fingerprint(dsA, 2).merkleRoot, fp2.merkleRoot);
        assertEq(datasets.fingerprint(dsA, 2).registeredAt, T0 + 99);

        vm.prank(alice);
        assertEq(datasets.publishVersion(dsA, _fp("A-v3")), 3);
    }

    function test_fingerprint_versionBounds() public {
        vm.expectRevert(DatasetRegistry.InvalidFingerprint.selector);
        datasets.fingerprint(dsA, 0);
        vm.expectRevert(DatasetRegistry.InvalidFingerprint.selector);
        datasets.fingerprint(dsA, 2);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 99));
        datasets.fingerprint(99, 1);
    }

    function test_publishVersion_nonOwnerReverts() public {
        DatasetRegistry.Fingerprint memory fp2 = _fp("A-v2");
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        vm.prank(bob);
        datasets.publishVersion(dsA, fp2);
    }

    function test_publishVersion_unknownReverts() public {
        DatasetRegistry.Fingerprint memory fp2 = _fp("A-v2");
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 42));
        vm.prank(alice);
        datasets.publishVersion(42, fp2);
    }

    function test_publishVersion_suspendedOwnerReverts() public {
        _suspend(alice);
        DatasetRegistry.Fingerprint memory fp2 = _fp("A-v2");
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        datasets.publishVersion(dsA, fp2);
    }

    function test_publishVersion_invalidFingerprintReverts() public {
        DatasetRegistry.Fingerprint memory fp2 = _fp("A-v2");
        fp2.schemaHash = bytes32(0);
        vm.expectRevert(DatasetRegistry.InvalidFingerprint.selector);
        vm.prank(alice);
        datasets.publishVersion(dsA, fp2);
        assertEq(datasets.currentVersion(dsA), 1);
    }

    // ------------------------------------------------------------------ policy limits

    function test_setPolicyLimits_happyPath() public {
        DatasetRegistry.PolicyLimits memory lim =
            DatasetRegistry.PolicyLimits({maxUses: 3, expiry: T0 + 10 days, epsilonTotal: 2 * EPS});
        vm.expectEmit(true, false, false, true, address(datasets));
        emit PolicySet(dsA, 3, T0 + 10 days, 2 * EPS);
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, lim);
        DatasetRegistry.Dataset memory d = datasets.dataset(dsA);
        assertEq(d.maxUses, 3);
        assertEq(d.expiry, T0 + 10 days);
        assertEq(d.epsilonTotal, 2 * EPS);
    }

    function test_setPolicyLimits_belowConsumptionReverts() public {
        _consume(dsA, 1, 3 * EPS);
        _consume(dsA, 2, 2 * EPS); // uses 2, spent 5 eps

        // maxUses below uses
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyBelowConsumption.selector, dsA));
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, _limits(1, 10 * EPS));
        // epsilonTotal below spent
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyBelowConsumption.selector, dsA));
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, _limits(10, 5 * EPS - 1));

        // exactly at consumption is allowed (and then exhausts the dataset)
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, _limits(2, 5 * EPS));
        assertEq(datasets.dataset(dsA).maxUses, 2);
        assertEq(datasets.dataset(dsA).epsilonTotal, 5 * EPS);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsA, uint64(2), uint64(2)));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_setPolicyLimits_accessControl() public {
        DatasetRegistry.PolicyLimits memory lim = _limits(1, 1);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        vm.prank(bob);
        datasets.setPolicyLimits(dsA, lim);

        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 0));
        vm.prank(alice);
        datasets.setPolicyLimits(0, lim);

        _suspend(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        vm.prank(alice);
        datasets.setPolicyLimits(dsA, lim);
        assertEq(datasets.dataset(dsA).maxUses, DEFAULT_MAX_USES);
    }

    // ------------------------------------------------------------------ grants

    function test_setAlgorithmAllowed_toggle() public {
        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyAlgorithmSet(dsA, OTHER_ALGO, true);
        vm.prank(alice);
        datasets.setAlgorithmAllowed(dsA, OTHER_ALGO, true);
        assertTrue(datasets.algorithmAllowed(dsA, OTHER_ALGO));

        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyAlgorithmSet(dsA, ALGO, false);
        vm.prank(alice);
        datasets.setAlgorithmAllowed(dsA, ALGO, false);
        assertFalse(datasets.algorithmAllowed(dsA, ALGO));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.AlgorithmNotAllowed.selector, dsA, ALGO));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_setRequesterAllowed_toggle() public {
        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyRequesterSet(dsA, dave, false);
        vm.prank(alice);
        datasets.setRequesterAllowed(dsA, dave, false);
        assertFalse(datasets.requesterAllowed(dsA, dave));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RequesterNotAllowed.selector, dsA, dave));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);

        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyRequesterSet(dsA, dave, true);
        vm.prank(alice);
        datasets.setRequesterAllowed(dsA, dave, true);
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_setRecipientAllowed_toggle() public {
        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyRecipientSet(dsA, dave, false);
        vm.prank(alice);
        datasets.setRecipientAllowed(dsA, dave, false);
        assertFalse(datasets.recipientAllowed(dsA, dave));
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RecipientNotAllowed.selector, dsA, dave));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);

        vm.expectEmit(true, true, false, true, address(datasets));
        emit PolicyRecipientSet(dsA, dave, true);
        vm.prank(alice);
        datasets.setRecipientAllowed(dsA, dave, true);
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_grantSetters_accessControl() public {
        vm.startPrank(bob);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        datasets.setAlgorithmAllowed(dsA, OTHER_ALGO, true);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        datasets.setRequesterAllowed(dsA, outsider, true);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotDatasetOwner.selector, dsA, bob));
        datasets.setRecipientAllowed(dsA, outsider, true);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 77));
        datasets.setAlgorithmAllowed(77, OTHER_ALGO, true);
        vm.stopPrank();

        _suspend(alice);
        vm.startPrank(alice);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        datasets.setAlgorithmAllowed(dsA, OTHER_ALGO, true);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        datasets.setRequesterAllowed(dsA, outsider, true);
        vm.expectRevert(abi.encodeWithSelector(Consortium.OrganisationNotActive.selector, alice));
        datasets.setRecipientAllowed(dsA, outsider, true);
        vm.stopPrank();

        assertFalse(datasets.algorithmAllowed(dsA, OTHER_ALGO));
        assertFalse(datasets.requesterAllowed(dsA, outsider));
        assertFalse(datasets.recipientAllowed(dsA, outsider));
    }

    // ------------------------------------------------------------------ checkUse

    function test_checkUse_happyPath() public view {
        datasets.checkUse(dsA, ALGO, dave, dave, DEFAULT_EPS_TOTAL);
        datasets.checkUse(dsA, ALGO, alice, bob, 0);
    }

    function test_checkUse_eachError() public {
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 9));
        datasets.checkUse(9, ALGO, dave, dave, 0);

        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.AlgorithmNotAllowed.selector, dsA, OTHER_ALGO));
        datasets.checkUse(dsA, OTHER_ALGO, dave, dave, 0);

        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RequesterNotAllowed.selector, dsA, outsider));
        datasets.checkUse(dsA, ALGO, outsider, dave, 0);

        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.RecipientNotAllowed.selector, dsA, outsider));
        datasets.checkUse(dsA, ALGO, dave, outsider, 0);

        vm.expectRevert(
            abi.encodeWithSelector(
                DatasetRegistry.PrivacyBudgetExceeded.selector, dsA, uint64(0), DEFAULT_EPS_TOTAL + 1, DEFAULT_EPS_TOTAL
            )
        );
        datasets.checkUse(dsA, ALGO, dave, dave, DEFAULT_EPS_TOTAL + 1);

        _setLimits(dsA, 0, DEFAULT_EPS_TOTAL);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsA, uint64(0), uint64(0)));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_checkUse_expiryIsInclusive() public {
        vm.warp(POLICY_EXPIRY);
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
        vm.warp(POLICY_EXPIRY + 1);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.PolicyExpired.selector, dsA, POLICY_EXPIRY));
        datasets.checkUse(dsA, ALGO, dave, dave, 0);
    }

    function test_checkUse_maxUint64EpsilonDoesNotOverflow() public {
        _consume(dsA, 1, 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                DatasetRegistry.PrivacyBudgetExceeded.selector, dsA, uint64(1), type(uint64).max, DEFAULT_EPS_TOTAL
            )
        );
        datasets.checkUse(dsA, ALGO, dave, dave, type(uint64).max);
    }

    // ------------------------------------------------------------------ consume

    function test_consume_onlyTaskManager() public {
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotTaskManager.selector, alice));
        vm.prank(alice);
        datasets.consume(dsA, 1, ALGO, dave, dave, 1);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.NotTaskManager.selector, address(this)));
        datasets.consume(dsA, 1, ALGO, dave, dave, 1);
        assertEq(_uses(dsA), 0);
    }

    function test_consume_happyPathAccumulates() public {
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetUsed(dsA, 11, 1, 2 * EPS);
        _consume(dsA, 11, 2 * EPS);
        vm.expectEmit(true, true, false, true, address(datasets));
        emit DatasetUsed(dsA, 12, 2, 5 * EPS);
        _consume(dsA, 12, 3 * EPS);
        assertEq(_uses(dsA), 2);
        assertEq(_spent(dsA), 5 * EPS);
        assertEq(_uses(dsB), 0);
    }

    function test_consume_failureConsumesNothing() public {
        _setLimits(dsA, 1, 2 * EPS);
        vm.expectRevert(
            abi.encodeWithSelector(DatasetRegistry.PrivacyBudgetExceeded.selector, dsA, uint64(0), 3 * EPS, 2 * EPS)
        );
        vm.prank(address(tm));
        datasets.consume(dsA, 1, ALGO, dave, dave, 3 * EPS);
        assertEq(_uses(dsA), 0);
        assertEq(_spent(dsA), 0);

        _consume(dsA, 1, 2 * EPS);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UsesExhausted.selector, dsA, uint64(1), uint64(1)));
        vm.prank(address(tm));
        datasets.consume(dsA, 2, ALGO, dave, dave, 0);
        assertEq(_uses(dsA), 1);
        assertEq(_spent(dsA), 2 * EPS);
    }

    function test_consume_unknownDatasetReverts() public {
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 5));
        vm.prank(address(tm));
        datasets.consume(5, 1, ALGO, dave, dave, 0);
    }

    // ------------------------------------------------------------------ views

    function test_views_unknownDatasetReverts() public {
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 0));
        datasets.dataset(0);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 4));
        datasets.ownerOf(4);
        vm.expectRevert(abi.encodeWithSelector(DatasetRegistry.UnknownDataset.selector, 4));
        datasets.currentVersion(4);
    }
}
