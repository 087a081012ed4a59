// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Consortium} from "./Consortium.sol";

/// @title Anchors of each node's local hash-chained action log.
/// @notice A node periodically anchors (sequence number, head hash) of its local log, so an
/// auditor can later check an exported log against what the node committed to on chain.
contract AuditLog {
    struct Anchor {
        uint64 sequence;
        uint64 anchoredAt;
        bytes32 headHash;
    }

    Consortium public immutable consortium;
    mapping(address org => Anchor) private _latest;
    mapping(address org => uint256) private _anchorCount;

    error SequenceNotIncreasing(uint64 latest, uint64 given);
    error ZeroHeadHash();

    event LogAnchored(address indexed org, uint64 indexed sequence, bytes32 headHash);

    constructor(Consortium consortium_) {
        consortium = consortium_;
    }

    /// @notice Anchor the head of the caller's local action log. Active organisations only.
    /// @param sequence the sequence number of the head entry; strictly increasing per org
    /// @param headHash the hash of the head entry (which chains every earlier entry)
    function anchor(uint64 sequence, bytes32 headHash) external {
        consortium.requireActive(msg.sender);
        if (headHash == bytes32(0)) revert ZeroHeadHash();
        Anchor storage last = _latest[msg.sender];
        if (_anchorCount[msg.sender] > 0 && sequence <= last.sequence) {
            revert SequenceNotIncreasing(last.sequence, sequence);
        }
        _latest[msg.sender] = Anchor({sequence: sequence, anchoredAt: uint64(block.timestamp), headHash: headHash});
        _anchorCount[msg.sender] += 1;
        emit LogAnchored(msg.sender, sequence, headHash);
    }

    /// @notice The latest anchor of `org` and how many it has posted.
    function latest(address org) external view returns (Anchor memory anchor_, uint256 count) {
        return (_latest[org], _anchorCount[org]);
    }
}
