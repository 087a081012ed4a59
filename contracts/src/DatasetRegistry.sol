// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Consortium} from "./Consortium.sol";
import {PcnTypes} from "./PcnTypes.sol";

/// @title Dataset registry: fingerprints and usage policies, deny by default.
/// @notice A dataset is registered by its fingerprint only (Merkle root of salted row
/// hashes, schema hash, row count, metadata hash); no raw or personal data on chain.
/// Uses and privacy budget are consumed atomically by the TaskManager when a task is
/// authorised and can never exceed the policy.
contract DatasetRegistry {
    struct Fingerprint {
        bytes32 merkleRoot;
        bytes32 schemaHash;
        bytes32 metadataHash;
        uint64 rowCount;
        uint64 registeredAt;
    }

    /// @notice Limits of a usage policy. Epsilon values are fixed point (PcnTypes.EPSILON_SCALE).
    struct PolicyLimits {
        uint64 maxUses;
        uint64 expiry;
        uint64 epsilonTotal;
    }

    /// @notice Who and what a policy allows, given at registration (each list ≤ 32 entries).
    struct PolicyGrants {
        bytes32[] algorithms;
        address[] requesters;
        address[] recipients;
    }

    /// @notice What a task over the dataset must look like (#13.6). Zero means "no rule".
    /// `epsilonFloor` > 0 makes the dataset DP-only: every task must carry ε ≥ floor (and ≤
    /// `epsilonCeiling` when set); nodes also refuse parameters that do not apply that DP.
    /// `maxKeys` caps the keys one private query may look up (checked by the nodes against
    /// the parameters, which reach the chain only as a hash). With `participantsListed`, only
    /// participants named by `setParticipantAllowed` may take part.
    struct TaskRules {
        uint64 epsilonFloor;
        uint64 epsilonCeiling;
        uint32 maxKeys;
        bool participantsListed;
    }

    struct Dataset {
        address owner;
        uint32 version;
        uint64 maxUses;
        uint64 uses;
        uint64 expiry;
        uint64 epsilonTotal;
        uint64 epsilonSpent;
    }

    Consortium public immutable consortium;
    address public immutable deployer;
    address public taskManager;
    uint256 public datasetCount;

    mapping(uint256 datasetId => Dataset) private _datasets;
    mapping(uint256 datasetId => mapping(uint32 version => Fingerprint)) private _fingerprints;
    mapping(uint256 datasetId => mapping(bytes32 algorithm => bool)) public algorithmAllowed;
    mapping(uint256 datasetId => mapping(address requester => bool)) public requesterAllowed;
    mapping(uint256 datasetId => mapping(address recipient => bool)) public recipientAllowed;
    mapping(uint256 datasetId => mapping(address participant => bool)) public participantAllowed;
    mapping(uint256 datasetId => TaskRules) private _taskRules;

    error UnknownDataset(uint256 datasetId);
    error NotDatasetOwner(uint256 datasetId, address caller);
    error InvalidFingerprint();
    error TooManyPolicyEntries(uint256 given, uint256 max);
    error PolicyBelowConsumption(uint256 datasetId);
    error AlgorithmNotAllowed(uint256 datasetId, bytes32 algorithmHash);
    error RequesterNotAllowed(uint256 datasetId, address requester);
    error RecipientNotAllowed(uint256 datasetId, address recipient);
    error UsesExhausted(uint256 datasetId, uint64 uses, uint64 maxUses);
    error PolicyExpired(uint256 datasetId, uint64 expiry);
    error PrivacyBudgetExceeded(uint256 datasetId, uint64 spent, uint64 requested, uint64 total);
    error NotTaskManager(address caller);
    error TaskManagerAlreadySet();
    error NotDeployer();
    error InvalidTaskRules(uint64 epsilonFloor, uint64 epsilonCeiling);
    error EpsilonBelowFloor(uint256 datasetId, uint64 epsilon, uint64 floor);
    error EpsilonAboveCeiling(uint256 datasetId, uint64 epsilon, uint64 ceiling);
    error ParticipantNotAllowed(uint256 datasetId, address participant);

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
    event PolicyParticipantSet(uint256 indexed datasetId, address indexed participant, bool allowed);
    event TaskRulesSet(
        uint256 indexed datasetId, uint64 epsilonFloor, uint64 epsilonCeiling, uint32 maxKeys, bool participantsListed
    );
    event DatasetUsed(uint256 indexed datasetId, uint256 indexed taskId, uint64 uses, uint64 epsilonSpent);
    event TaskManagerSet(address indexed taskManager);

    constructor(Consortium consortium_) {
        consortium = consortium_;
        deployer = msg.sender;
    }

    /// @notice Wire the TaskManager that may consume uses and budget. Once, by the deployer.
    function setTaskManager(address taskManager_) external {
        if (msg.sender != deployer) revert NotDeployer();
        if (taskManager != address(0)) revert TaskManagerAlreadySet();
        // Zero is harmless: taskManager stays unset (consume() then always reverts) and the
        // deployer can call again with the real address.
        // slither-disable-next-line missing-zero-check
        taskManager = taskManager_;
        emit TaskManagerSet(taskManager_);
    }

    /// @notice Register a dataset (version 1) with its usage policy. Active organisations only.
    /// @return datasetId the new dataset's id (sequential from 1)
    function register(Fingerprint calldata fingerprint, PolicyLimits calldata limits, PolicyGrants calldata grants)
        external
        returns (uint256 datasetId)
    {
        consortium.requireActive(msg.sender);
        _checkFingerprint(fingerprint);
        datasetId = ++datasetCount;
        Dataset storage ds = _datasets[datasetId];
        ds.owner = msg.sender;
        ds.version = 1;
        _storeFingerprint(datasetId, 1, fingerprint);
        emit DatasetRegistered(
            datasetId,
            msg.sender,
            1,
            fingerprint.merkleRoot,
            fingerprint.schemaHash,
            fingerprint.rowCount,
            fingerprint.metadataHash
        );
        _setLimits(datasetId, ds, limits);
        _grantAll(datasetId, grants);
    }

    /// @notice Publish a new version of a dataset's fingerprint. Old versions stay readable.
    /// Tasks submitted against the old version can no longer be authorised.
    function publishVersion(uint256 datasetId, Fingerprint calldata fingerprint) external returns (uint32 version) {
        Dataset storage ds = _ownedActive(datasetId);
        _checkFingerprint(fingerprint);
        version = ++ds.version;
        _storeFingerprint(datasetId, version, fingerprint);
        emit DatasetVersionPublished(
            datasetId,
            msg.sender,
            version,
            fingerprint.merkleRoot,
            fingerprint.schemaHash,
            fingerprint.rowCount,
            fingerprint.metadataHash
        );
    }

    /// @notice Change the policy limits. They can never go below what was already consumed.
    function setPolicyLimits(uint256 datasetId, PolicyLimits calldata limits) external {
        Dataset storage ds = _ownedActive(datasetId);
        _setLimits(datasetId, ds, limits);
    }

    /// @notice Allow or disallow an algorithm hash for this dataset.
    function setAlgorithmAllowed(uint256 datasetId, bytes32 algorithmHash, bool allowed) external {
        _ownedActive(datasetId);
        algorithmAllowed[datasetId][algorithmHash] = allowed;
        emit PolicyAlgorithmSet(datasetId, algorithmHash, allowed);
    }

    /// @notice Allow or disallow a requester organisation for this dataset.
    function setRequesterAllowed(uint256 datasetId, address requester, bool allowed) external {
        _ownedActive(datasetId);
        requesterAllowed[datasetId][requester] = allowed;
        emit PolicyRequesterSet(datasetId, requester, allowed);
    }

    /// @notice Allow or disallow a result recipient for this dataset.
    function setRecipientAllowed(uint256 datasetId, address recipient, bool allowed) external {
        _ownedActive(datasetId);
        recipientAllowed[datasetId][recipient] = allowed;
        emit PolicyRecipientSet(datasetId, recipient, allowed);
    }

    /// @notice Allow or disallow a participant (only enforced when the rules list participants).
    function setParticipantAllowed(uint256 datasetId, address participant, bool allowed) external {
        _ownedActive(datasetId);
        participantAllowed[datasetId][participant] = allowed;
        emit PolicyParticipantSet(datasetId, participant, allowed);
    }

    /// @notice Set what every later task over the dataset must satisfy (see TaskRules).
    /// A pending task is held to the rules in force when it is authorised.
    function setTaskRules(uint256 datasetId, TaskRules calldata rules) external {
        _ownedActive(datasetId);
        if (rules.epsilonCeiling != 0 && rules.epsilonCeiling < rules.epsilonFloor) {
            revert InvalidTaskRules(rules.epsilonFloor, rules.epsilonCeiling);
        }
        _taskRules[datasetId] = rules;
        emit TaskRulesSet(datasetId, rules.epsilonFloor, rules.epsilonCeiling, rules.maxKeys, rules.participantsListed);
    }

    /// @notice The dataset's task rules (all zero when the owner set none).
    function taskRules(uint256 datasetId) external view returns (TaskRules memory) {
        _known(datasetId);
        return _taskRules[datasetId];
    }

    /// @notice Reverts ParticipantNotAllowed unless every participant may take part in a task
    /// over the dataset (always true when the rules do not list participants).
    function checkParticipants(uint256 datasetId, address[] calldata participants) external view {
        _known(datasetId);
        if (!_taskRules[datasetId].participantsListed) return;
        // bounded: TaskManager passes at most MAX_PARTICIPANTS
        for (uint256 i = 0; i < participants.length; ++i) {
            if (!participantAllowed[datasetId][participants[i]]) {
                revert ParticipantNotAllowed(datasetId, participants[i]);
            }
        }
    }

    /// @notice Reverts with the named policy error unless one use of `epsilon` is allowed now.
    function checkUse(uint256 datasetId, bytes32 algorithmHash, address requester, address recipient, uint64 epsilon)
        external
        view
    {
        _checkUse(datasetId, _known(datasetId), algorithmHash, requester, recipient, epsilon);
    }

    /// @notice Consume one use and `epsilon` of budget for `taskId`. TaskManager only; reverts
    /// with the named policy error and consumes nothing when the policy does not allow it.
    function consume(
        uint256 datasetId,
        uint256 taskId,
        bytes32 algorithmHash,
        address requester,
        address recipient,
        uint64 epsilon
    ) external {
        if (msg.sender != taskManager) revert NotTaskManager(msg.sender);
        Dataset storage ds = _known(datasetId);
        _checkUse(datasetId, ds, algorithmHash, requester, recipient, epsilon);
        ds.uses += 1;
        ds.epsilonSpent += epsilon;
        emit DatasetUsed(datasetId, taskId, ds.uses, ds.epsilonSpent);
    }

    /// @notice The dataset's owner, current version, limits and consumption.
    function dataset(uint256 datasetId) external view returns (Dataset memory) {
        return _known(datasetId);
    }

    /// @notice The fingerprint of a given version (1..current).
    function fingerprint(uint256 datasetId, uint32 version) external view returns (Fingerprint memory) {
        Dataset storage ds = _known(datasetId);
        if (version == 0 || version > ds.version) revert InvalidFingerprint();
        return _fingerprints[datasetId][version];
    }

    /// @notice The owner of a dataset (reverts for unknown ids).
    function ownerOf(uint256 datasetId) external view returns (address) {
        return _known(datasetId).owner;
    }

    /// @notice The current version of a dataset (reverts for unknown ids).
    function currentVersion(uint256 datasetId) external view returns (uint32) {
        return _known(datasetId).version;
    }

    function _checkUse(
        uint256 datasetId,
        Dataset storage ds,
        bytes32 algorithmHash,
        address requester,
        address recipient,
        uint64 epsilon
    ) private view {
        if (!algorithmAllowed[datasetId][algorithmHash]) {
            revert AlgorithmNotAllowed(datasetId, algorithmHash);
        }
        if (!requesterAllowed[datasetId][requester]) revert RequesterNotAllowed(datasetId, requester);
        if (!recipientAllowed[datasetId][recipient]) revert RecipientNotAllowed(datasetId, recipient);
        if (block.timestamp > ds.expiry) revert PolicyExpired(datasetId, ds.expiry);
        if (ds.uses >= ds.maxUses) revert UsesExhausted(datasetId, ds.uses, ds.maxUses);
        if (uint256(ds.epsilonSpent) + epsilon > ds.epsilonTotal) {
            revert PrivacyBudgetExceeded(datasetId, ds.epsilonSpent, epsilon, ds.epsilonTotal);
        }
        TaskRules storage rules = _taskRules[datasetId];
        if (epsilon < rules.epsilonFloor) revert EpsilonBelowFloor(datasetId, epsilon, rules.epsilonFloor);
        if (rules.epsilonCeiling != 0 && epsilon > rules.epsilonCeiling) {
            revert EpsilonAboveCeiling(datasetId, epsilon, rules.epsilonCeiling);
        }
    }

    function _setLimits(uint256 datasetId, Dataset storage ds, PolicyLimits calldata limits) private {
        if (limits.maxUses < ds.uses || limits.epsilonTotal < ds.epsilonSpent) {
            revert PolicyBelowConsumption(datasetId);
        }
        ds.maxUses = limits.maxUses;
        ds.expiry = limits.expiry;
        ds.epsilonTotal = limits.epsilonTotal;
        emit PolicySet(datasetId, limits.maxUses, limits.expiry, limits.epsilonTotal);
    }

    function _grantAll(uint256 datasetId, PolicyGrants calldata grants) private {
        uint256 max = PcnTypes.MAX_POLICY_ENTRIES;
        if (grants.algorithms.length > max) revert TooManyPolicyEntries(grants.algorithms.length, max);
        if (grants.requesters.length > max) revert TooManyPolicyEntries(grants.requesters.length, max);
        if (grants.recipients.length > max) revert TooManyPolicyEntries(grants.recipients.length, max);
        for (uint256 i = 0; i < grants.algorithms.length; ++i) {
            algorithmAllowed[datasetId][grants.algorithms[i]] = true;
            emit PolicyAlgorithmSet(datasetId, grants.algorithms[i], true);
        }
        for (uint256 i = 0; i < grants.requesters.length; ++i) {
            requesterAllowed[datasetId][grants.requesters[i]] = true;
            emit PolicyRequesterSet(datasetId, grants.requesters[i], true);
        }
        for (uint256 i = 0; i < grants.recipients.length; ++i) {
            recipientAllowed[datasetId][grants.recipients[i]] = true;
            emit PolicyRecipientSet(datasetId, grants.recipients[i], true);
        }
    }

    function _storeFingerprint(uint256 datasetId, uint32 version, Fingerprint calldata fp) private {
        _fingerprints[datasetId][version] = Fingerprint({
            merkleRoot: fp.merkleRoot,
            schemaHash: fp.schemaHash,
            metadataHash: fp.metadataHash,
            rowCount: fp.rowCount,
            registeredAt: uint64(block.timestamp)
        });
    }

    function _checkFingerprint(Fingerprint calldata fp) private pure {
        if (fp.merkleRoot == bytes32(0) || fp.schemaHash == bytes32(0)) revert InvalidFingerprint();
    }

    function _known(uint256 datasetId) private view returns (Dataset storage ds) {
        ds = _datasets[datasetId];
        if (ds.owner == address(0)) revert UnknownDataset(datasetId);
    }

    function _ownedActive(uint256 datasetId) private view returns (Dataset storage ds) {
        ds = _known(datasetId);
        if (ds.owner != msg.sender) revert NotDatasetOwner(datasetId, msg.sender);
        consortium.requireActive(msg.sender);
    }
}
