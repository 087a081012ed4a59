// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {PcnTypes} from "./PcnTypes.sol";

/// @title Consortium membership: who may take part in pcn and how to reach them.
/// @notice The admin (DEFAULT_ADMIN_ROLE) admits and suspends organisations; auditors hold
/// AUDITOR_ROLE. Each organisation is identified by its Ethereum account and publishes an
/// X25519 encryption key and a peer endpoint. No personal data is stored.
contract Consortium is AccessControl {
    bytes32 public constant AUDITOR_ROLE = keccak256("pcn.AUDITOR_ROLE");
    uint256 public constant MAX_NAME_BYTES = 64;
    uint256 public constant MAX_ENDPOINT_BYTES = 256;
    uint64 public constant DEFAULT_DROPOUT_SILENCE = 60;

    /// @notice How long (seconds) a task participant must have shown no sign of life on chain
    /// (start, heartbeat, receipt) before the result recipient may report it dropped.
    uint64 public dropoutSilence = DEFAULT_DROPOUT_SILENCE;

    struct Organisation {
        string name;
        bytes32 encryptionKey;
        string endpoint;
        PcnTypes.OrgStatus status;
        uint64 admittedAt;
        uint64 statusChangedAt;
    }

    mapping(address account => Organisation) private _orgs;
    address[] private _accounts;

    error OrganisationAlreadyAdmitted(address account);
    error OrganisationNotAdmitted(address account);
    error OrganisationNotActive(address account);
    error OrganisationAlreadySuspended(address account);
    error InvalidOrganisationName();
    error InvalidEndpoint();
    error InvalidEncryptionKey();
    error ZeroAccount();
    error InvalidDropoutSilence();

    event OrganisationAdmitted(address indexed account, string name, bytes32 encryptionKey, string endpoint);
    event OrganisationSuspended(address indexed account, address indexed by);
    event OrganisationReinstated(address indexed account, address indexed by);
    event OrganisationEndpointUpdated(address indexed account, string endpoint);
    event OrganisationKeyUpdated(address indexed account, bytes32 encryptionKey);
    event DropoutSilenceSet(uint64 seconds_, address indexed by);

    constructor(address admin) {
        if (admin == address(0)) revert ZeroAccount();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Admit an organisation. Admin only.
    /// @param account the organisation's Ethereum account (its identity)
    /// @param name a short public name (1..64 bytes)
    /// @param encryptionKey the organisation's X25519 public key
    /// @param endpoint the URL of its peer mailbox (1..256 bytes)
    function admit(address account, string calldata name, bytes32 encryptionKey, string calldata endpoint)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (account == address(0)) revert ZeroAccount();
        if (_orgs[account].status != PcnTypes.OrgStatus.None) revert OrganisationAlreadyAdmitted(account);
        _checkName(name);
        _checkEndpoint(endpoint);
        if (encryptionKey == bytes32(0)) revert InvalidEncryptionKey();
        _orgs[account] = Organisation({
            name: name,
            encryptionKey: encryptionKey,
            endpoint: endpoint,
            status: PcnTypes.OrgStatus.Active,
            admittedAt: uint64(block.timestamp),
            statusChangedAt: uint64(block.timestamp)
        });
        _accounts.push(account);
        emit OrganisationAdmitted(account, name, encryptionKey, endpoint);
    }

    /// @notice Suspend an active organisation: it can no longer submit, approve, start,
    /// refuse or post receipts. Admin only.
    function suspend(address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Organisation storage org = _orgs[account];
        if (org.status == PcnTypes.OrgStatus.None) revert OrganisationNotAdmitted(account);
        if (org.status == PcnTypes.OrgStatus.Suspended) revert OrganisationAlreadySuspended(account);
        org.status = PcnTypes.OrgStatus.Suspended;
        org.statusChangedAt = uint64(block.timestamp);
        emit OrganisationSuspended(account, msg.sender);
    }

    /// @notice Reinstate a suspended organisation. Admin only.
    function reinstate(address account) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Organisation storage org = _orgs[account];
        if (org.status == PcnTypes.OrgStatus.None) revert OrganisationNotAdmitted(account);
        if (org.status == PcnTypes.OrgStatus.Active) revert OrganisationNotActive(account);
        org.status = PcnTypes.OrgStatus.Active;
        org.statusChangedAt = uint64(block.timestamp);
        emit OrganisationReinstated(account, msg.sender);
    }

    /// @notice Set the silence (1 s .. 1 day) after which a task participant may be reported
    /// dropped. Admin only.
    function setDropoutSilence(uint64 seconds_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (seconds_ == 0 || seconds_ > 1 days) revert InvalidDropoutSilence();
        dropoutSilence = seconds_;
        emit DropoutSilenceSet(seconds_, msg.sender);
    }

    /// @notice An active organisation moves its peer mailbox.
    function updateEndpoint(string calldata endpoint) external {
        Organisation storage org = _activeOrg(msg.sender);
        _checkEndpoint(endpoint);
        org.endpoint = endpoint;
        emit OrganisationEndpointUpdated(msg.sender, endpoint);
    }

    /// @notice An active organisation rotates its X25519 encryption key.
    function updateEncryptionKey(bytes32 encryptionKey) external {
        Organisation storage org = _activeOrg(msg.sender);
        if (encryptionKey == bytes32(0)) revert InvalidEncryptionKey();
        org.encryptionKey = encryptionKey;
        emit OrganisationKeyUpdated(msg.sender, encryptionKey);
    }

    /// @notice True when `account` is an admitted organisation that is not suspended.
    function isActive(address account) external view returns (bool) {
        // An enum compared with an enum: Slither flags it only because the same struct also
        // stores timestamps (admittedAt, statusChangedAt), which its taint analysis follows.
        // slither-disable-next-line incorrect-equality
        return _orgs[account].status == PcnTypes.OrgStatus.Active;
    }

    /// @notice Reverts with OrganisationNotActive unless `account` is active.
    function requireActive(address account) external view {
        if (_orgs[account].status != PcnTypes.OrgStatus.Active) revert OrganisationNotActive(account);
    }

    /// @notice The full record of an organisation (status None when never admitted).
    function organisation(address account) external view returns (Organisation memory) {
        return _orgs[account];
    }

    /// @notice Number of organisations ever admitted (for paging with organisationAt).
    function organisationCount() external view returns (uint256) {
        return _accounts.length;
    }

    /// @notice The account of the i-th admitted organisation, in admission order.
    function organisationAt(uint256 index) external view returns (address) {
        return _accounts[index];
    }

    function _activeOrg(address account) private view returns (Organisation storage org) {
        org = _orgs[account];
        if (org.status != PcnTypes.OrgStatus.Active) revert OrganisationNotActive(account);
    }

    function _checkName(string calldata name) private pure {
        uint256 len = bytes(name).length;
        if (len == 0 || len > MAX_NAME_BYTES) revert InvalidOrganisationName();
    }

    function _checkEndpoint(string calldata endpoint) private pure {
        uint256 len = bytes(endpoint).length;
        if (len == 0 || len > MAX_ENDPOINT_BYTES) revert InvalidEndpoint();
    }
}
