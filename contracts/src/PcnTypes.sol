// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Types shared by every pcn contract and mirrored in Python (pcn.chain.types).
/// @dev Enum order is part of the on-chain format: append only, never reorder.
library PcnTypes {
    /// @notice Why a node refused to take part in a task. One code per check of DESIGN §5.
    enum RefusalReason {
        None,
        TaskNotAuthorised,
        TaskExpired,
        TaskCancelled,
        FingerprintMismatch,
        AlgorithmHashMismatch,
        AlgorithmNotApproved,
        RequesterNotAllowed,
        RecipientNotAllowed,
        UsesExhausted,
        PolicyExpired,
        PrivacyBudgetExceeded,
        PeerNotActive,
        BadPeerSignature,
        DataUnavailable,
        InvalidParameters,
        PeerUnreachable,
        ProtocolFailure,
        DpNotApplied,
        KeyCapExceeded
    }

    enum OrgStatus {
        None,
        Active,
        Suspended
    }

    enum TaskStatus {
        None,
        Pending,
        Authorised,
        Running,
        Completed,
        Disputed,
        Refused,
        Cancelled,
        Expired
    }

    enum ParticipantState {
        None,
        Invited,
        Started,
        Refused,
        Receipted,
        Dropped
    }

    /// @notice Upper bounds that keep every loop in the contracts bounded.
    uint256 internal constant MAX_PARTICIPANTS = 16;
    uint256 internal constant MAX_DATASETS_PER_TASK = 8;
    uint256 internal constant MAX_POLICY_ENTRIES = 32;
    /// @notice Differential-privacy budgets are fixed point with 6 decimals (1 epsilon = 1e6).
    uint64 internal constant EPSILON_SCALE = 1e6;
}
