// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Consortium} from "./Consortium.sol";

/// @title Algorithm registry: algorithms are known by the canonical hash of their code.
/// @notice A node runs only code whose hash, computed at run time, equals a registered,
/// admin-approved, non-deprecated hash that every input dataset's owner has approved.
/// Registration is a proposal: the consortium admin checks the code behind the hash and its
/// kind before approving it (and says whether it tolerates dropouts); a wrong registration
/// can be revoked so that the hash can be registered again, correctly.
contract AlgorithmRegistry {
    uint256 public constant MAX_LABEL_BYTES = 32;

    struct Algorithm {
        address publisher;
        string kind;
        string version;
        bytes32 descriptionHash;
        uint64 registeredAt;
        bool deprecated;
        bool approved; // by the consortium admin; unusable until then
        bool dropoutTolerant; // set by the admin at approval: may a task go on without a party?
    }

    Consortium public immutable consortium;
    mapping(bytes32 codeHash => Algorithm) private _algorithms;
    bytes32[] private _hashes;
    mapping(bytes32 codeHash => bool) private _listed; // in _hashes already (revoked hashes stay listed)

    error ZeroCodeHash();
    error AlgorithmAlreadyRegistered(bytes32 codeHash);
    error UnknownAlgorithm(bytes32 codeHash);
    error AlgorithmIsDeprecated(bytes32 codeHash);
    error NotAlgorithmPublisher(bytes32 codeHash, address caller);
    error InvalidAlgorithmLabel();
    error NotConsortiumAdmin(address caller);
    error AlgorithmNotApproved(bytes32 codeHash);
    error AlgorithmAlreadyApproved(bytes32 codeHash);
    error AlgorithmNotDeprecated(bytes32 codeHash);

    event AlgorithmRegistered(
        bytes32 indexed codeHash, address indexed publisher, string kind, string version, bytes32 descriptionHash
    );
    event AlgorithmDeprecated(bytes32 indexed codeHash, address indexed by);
    event AlgorithmApproved(bytes32 indexed codeHash, address indexed by, bool dropoutTolerant);
    event AlgorithmRevoked(bytes32 indexed codeHash, address indexed by);
    event AlgorithmUndeprecated(bytes32 indexed codeHash, address indexed by);

    constructor(Consortium consortium_) {
        consortium = consortium_;
    }

    /// @notice Propose an algorithm by the canonical hash of its source files. Unusable until
    /// the consortium admin approves it (`approve`).
    /// @param codeHash canonical hash of the code that will run (sorted paths + contents)
    /// @param kind the computation kind, e.g. "psi", "stats", "query", "hetero-lr", "fedavg"
    /// @param version a version label (1..32 bytes)
    /// @param descriptionHash hash of the human description kept off chain
    function register(bytes32 codeHash, string calldata kind, string calldata version, bytes32 descriptionHash)
        external
    {
        consortium.requireActive(msg.sender);
        if (codeHash == bytes32(0)) revert ZeroCodeHash();
        if (_algorithms[codeHash].publisher != address(0)) revert AlgorithmAlreadyRegistered(codeHash);
        _checkLabel(kind);
        _checkLabel(version);
        _algorithms[codeHash] = Algorithm({
            publisher: msg.sender,
            kind: kind,
            version: version,
            descriptionHash: descriptionHash,
            registeredAt: uint64(block.timestamp),
            deprecated: false,
            approved: false,
            dropoutTolerant: false
        });
        if (!_listed[codeHash]) {
            _listed[codeHash] = true;
            _hashes.push(codeHash);
        }
        emit AlgorithmRegistered(codeHash, msg.sender, kind, version, descriptionHash);
    }

    /// @notice Approve a proposed algorithm so tasks may use it. Consortium admin only.
    /// @param dropoutTolerant whether its protocol finishes without a party that stopped
    /// answering (fedavg's secure aggregation); TaskManager.reportDropout needs it
    function approve(bytes32 codeHash, bool dropoutTolerant) external {
        _requireAdmin();
        Algorithm storage algo = _known(codeHash);
        if (algo.approved) revert AlgorithmAlreadyApproved(codeHash);
        algo.approved = true;
        algo.dropoutTolerant = dropoutTolerant;
        emit AlgorithmApproved(codeHash, msg.sender, dropoutTolerant);
    }

    /// @notice Remove a wrong registration (a squatted hash, a false kind): the hash becomes
    /// unknown and can be registered again. Consortium admin only. Tasks already authorised
    /// with it are not stopped here; nodes re-check the registry while they run.
    function revoke(bytes32 codeHash) external {
        _requireAdmin();
        _known(codeHash);
        delete _algorithms[codeHash];
        emit AlgorithmRevoked(codeHash, msg.sender);
    }

    /// @notice Deprecate an algorithm: no new task may be submitted or authorised with it.
    /// Callable by its publisher while an active organisation, or the consortium admin.
    function deprecate(bytes32 codeHash) external {
        Algorithm storage algo = _known(codeHash);
        if (algo.deprecated) revert AlgorithmIsDeprecated(codeHash);
        if (!_isAdmin(msg.sender)) {
            consortium.requireActive(msg.sender);
            if (msg.sender != algo.publisher) revert NotAlgorithmPublisher(codeHash, msg.sender);
        }
        algo.deprecated = true;
        emit AlgorithmDeprecated(codeHash, msg.sender);
    }

    /// @notice Lift a deprecation (made in error, or by a publisher against the consortium).
    /// Consortium admin only.
    function undeprecate(bytes32 codeHash) external {
        _requireAdmin();
        Algorithm storage algo = _known(codeHash);
        if (!algo.deprecated) revert AlgorithmNotDeprecated(codeHash);
        algo.deprecated = false;
        emit AlgorithmUndeprecated(codeHash, msg.sender);
    }

    /// @notice Reverts with UnknownAlgorithm, AlgorithmNotApproved or AlgorithmIsDeprecated
    /// unless usable.
    function requireUsable(bytes32 codeHash) external view {
        Algorithm storage algo = _known(codeHash);
        if (!algo.approved) revert AlgorithmNotApproved(codeHash);
        if (algo.deprecated) revert AlgorithmIsDeprecated(codeHash);
    }

    /// @notice True when the hash is registered, approved and not deprecated.
    function isUsable(bytes32 codeHash) external view returns (bool) {
        Algorithm storage algo = _algorithms[codeHash];
        return algo.publisher != address(0) && algo.approved && !algo.deprecated;
    }

    /// @notice True when the admin approved the algorithm as tolerating dropouts.
    function isDropoutTolerant(bytes32 codeHash) external view returns (bool) {
        Algorithm storage algo = _algorithms[codeHash];
        return algo.approved && algo.dropoutTolerant;
    }

    /// @notice The record of an algorithm (publisher zero when unknown).
    function algorithm(bytes32 codeHash) external view returns (Algorithm memory) {
        return _algorithms[codeHash];
    }

    /// @notice Number of hashes ever registered (for paging with algorithmAt; a revoked hash
    /// stays listed with a zero record).
    function algorithmCount() external view returns (uint256) {
        return _hashes.length;
    }

    /// @notice The code hash of the i-th registered algorithm.
    function algorithmAt(uint256 index) external view returns (bytes32) {
        return _hashes[index];
    }

    function _known(bytes32 codeHash) private view returns (Algorithm storage algo) {
        algo = _algorithms[codeHash];
        if (algo.publisher == address(0)) revert UnknownAlgorithm(codeHash);
    }

    function _isAdmin(address account) private view returns (bool) {
        return consortium.hasRole(consortium.DEFAULT_ADMIN_ROLE(), account);
    }

    function _requireAdmin() private view {
        if (!_isAdmin(msg.sender)) revert NotConsortiumAdmin(msg.sender);
    }

    function _checkLabel(string calldata label) private pure {
        uint256 len = bytes(label).length;
        if (len == 0 || len > MAX_LABEL_BYTES) revert InvalidAlgorithmLabel();
    }
}
