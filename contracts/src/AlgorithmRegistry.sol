// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Consortium} from "./Consortium.sol";

/// @title Algorithm registry: algorithms are known by the canonical hash of their code.
/// @notice A node runs only code whose hash, computed at run time, equals a registered,
/// non-deprecated hash that every input dataset's owner has approved.
contract AlgorithmRegistry {
    uint256 public constant MAX_LABEL_BYTES = 32;

    struct Algorithm {
        address publisher;
        string kind;
        string version;
        bytes32 descriptionHash;
        uint64 registeredAt;
        bool deprecated;
    }

    Consortium public immutable consortium;
    mapping(bytes32 codeHash => Algorithm) private _algorithms;
    bytes32[] private _hashes;

    error ZeroCodeHash();
    error AlgorithmAlreadyRegistered(bytes32 codeHash);
    error UnknownAlgorithm(bytes32 codeHash);
    error AlgorithmIsDeprecated(bytes32 codeHash);
    error NotAlgorithmPublisher(bytes32 codeHash, address caller);
    error InvalidAlgorithmLabel();

    event AlgorithmRegistered(
        bytes32 indexed codeHash, address indexed publisher, string kind, string version, bytes32 descriptionHash
    );
    event AlgorithmDeprecated(bytes32 indexed codeHash, address indexed by);

    constructor(Consortium consortium_) {
        consortium = consortium_;
    }

    /// @notice Register an algorithm by the canonical hash of its source files.
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
            deprecated: false
        });
        _hashes.push(codeHash);
        emit AlgorithmRegistered(codeHash, msg.sender, kind, version, descriptionHash);
    }

    /// @notice Deprecate an algorithm: no new task may be submitted or authorised with it.
    /// Callable by its publisher or the consortium admin.
    function deprecate(bytes32 codeHash) external {
        Algorithm storage algo = _known(codeHash);
        if (algo.deprecated) revert AlgorithmIsDeprecated(codeHash);
        if (msg.sender != algo.publisher && !consortium.hasRole(consortium.DEFAULT_ADMIN_ROLE(), msg.sender)) {
            revert NotAlgorithmPublisher(codeHash, msg.sender);
        }
        algo.deprecated = true;
        emit AlgorithmDeprecated(codeHash, msg.sender);
    }

    /// @notice Reverts with UnknownAlgorithm or AlgorithmIsDeprecated unless usable.
    function requireUsable(bytes32 codeHash) external view {
        if (_known(codeHash).deprecated) revert AlgorithmIsDeprecated(codeHash);
    }

    /// @notice True when the hash is registered and not deprecated.
    function isUsable(bytes32 codeHash) external view returns (bool) {
        Algorithm storage algo = _algorithms[codeHash];
        return algo.publisher != address(0) && !algo.deprecated;
    }

    /// @notice The record of an algorithm (publisher zero when unknown).
    function algorithm(bytes32 codeHash) external view returns (Algorithm memory) {
        return _algorithms[codeHash];
    }

    /// @notice Number of algorithms ever registered (for paging with algorithmAt).
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

    function _checkLabel(string calldata label) private pure {
        uint256 len = bytes(label).length;
        if (len == 0 || len > MAX_LABEL_BYTES) revert InvalidAlgorithmLabel();
    }
}
