// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {Consortium} from "./Consortium.sol";
import {AlgorithmRegistry} from "./AlgorithmRegistry.sol";
import {DatasetRegistry} from "./DatasetRegistry.sol";
import {PcnTypes} from "./PcnTypes.sol";

/// @title Task manager: the on-chain life of every privacy computation.
/// @notice Pending --(every owner approves, policies consumed)--> Authorised --(first start)-->
/// Running --(every receipt agrees)--> Completed, or Disputed when receipts disagree (a
/// participant the result recipient reported dropped is not waited for: `reportDropout`,
/// only for dropout-tolerant algorithms, after `Consortium.dropoutSilence` of on-chain
/// silence, never below the request's `minSurvivors`; the dropped party may `contestDropout`,
/// which makes the task Disputed). Authorisation also needs the `consent` of every participant
/// that owns none of the input datasets.
/// Refused when any participant refuses, Cancelled by the requester before any start,
/// Expired by anyone once the deadline has passed.
contract TaskManager is EIP712, Nonces {
    bytes32 public constant APPROVAL_TYPEHASH =
        keccak256("Approval(uint256 taskId,bytes32 requestHash,address owner,uint256 nonce,uint256 deadline)");

    /// @notice What a requester asks for.
    struct TaskRequest {
        bytes32 algorithmHash;
        uint256[] datasetIds;
        address[] participants;
        bytes32 paramsHash;
        address resultRecipient;
        uint64 deadline;
        uint64 epsilon;
        /// fewest participants that must receipt (2..participants; a one-party task: 1); the
        /// owners approve it with the rest of the request
        uint8 minSurvivors;
    }

    struct Task {
        address requester;
        PcnTypes.TaskStatus status;
        uint8 requiredApprovals;
        uint8 approvals;
        uint8 startedCount;
        uint8 receiptCount;
        PcnTypes.RefusalReason refusalReason;
        address resultRecipient;
        uint64 deadline;
        uint64 epsilon;
        uint64 createdAt;
        uint64 authorisedAt;
        bytes32 algorithmHash;
        bytes32 paramsHash;
        bytes32 resultHash;
    }

    /// @notice What each participant attests when it has finished its side of a task.
    struct Receipt {
        bytes32 resultHash;
        bytes32 transcriptHash;
        bytes32 inputFingerprint;
        bytes32 algorithmHash;
        bytes32 deletionHash;
        uint64 startedAt;
        uint64 finishedAt;
    }

    Consortium public immutable consortium;
    AlgorithmRegistry public immutable algorithms;
    DatasetRegistry public immutable datasets;
    uint256 public taskCount;

    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => uint256[]) private _datasetIds;
    mapping(uint256 taskId => uint32[]) private _datasetVersions;
    mapping(uint256 taskId => address[]) private _participants;
    mapping(uint256 taskId => address[]) private _approvers;
    mapping(uint256 taskId => mapping(address owner => uint8)) private _approverState; // 1 due, 2 given
    mapping(uint256 taskId => mapping(address participant => PcnTypes.ParticipantState)) private _state;
    mapping(uint256 taskId => mapping(address participant => Receipt)) private _receipts;
    mapping(uint256 taskId => uint256) private _droppedCount;
    mapping(uint256 taskId => bytes32) private _requestHashes;
    mapping(uint256 taskId => uint8) private _minSurvivors;
    mapping(uint256 taskId => address[]) private _consenters; // participants owning no input dataset
    mapping(uint256 taskId => mapping(address participant => uint8)) private _consentState; // 1 due, 2 given
    mapping(uint256 taskId => uint8) private _consentsGiven;
    mapping(uint256 taskId => mapping(address participant => uint64)) private _lastSeen;

    error UnknownTask(uint256 taskId);
    error InvalidDatasetCount(uint256 given);
    error InvalidParticipantCount(uint256 given);
    error DuplicateDataset(uint256 datasetId);
    error DuplicateParticipant(address participant);
    error OwnerNotParticipant(uint256 datasetId, address owner);
    error DeadlineNotInFuture(uint64 deadline);
    error InvalidEpsilon();
    error InvalidTaskStatus(uint256 taskId, PcnTypes.TaskStatus status);
    error TaskDeadlinePassed(uint256 taskId, uint64 deadline);
    error TaskNotExpired(uint256 taskId, uint64 deadline);
    error NotAnApprover(uint256 taskId, address account);
    error AlreadyApproved(uint256 taskId, address owner);
    error ApprovalSignatureExpired(uint256 deadline);
    error InvalidApprovalSignature(address expectedOwner, address recovered);
    error NotRequester(uint256 taskId, address caller);
    error NotParticipant(uint256 taskId, address account);
    error AlreadyStarted(uint256 taskId, address participant);
    error NotStarted(uint256 taskId, address participant);
    error AlreadyFinished(uint256 taskId, address participant);
    error InvalidRefusalReason(uint8 reason);
    error InvalidReceiptTimes(uint64 startedAt, uint64 finishedAt);
    error DatasetVersionChanged(uint256 datasetId, uint32 submitted, uint32 current);
    error NotResultRecipient(uint256 taskId, address caller);
    error CannotDrop(uint256 taskId, address participant, PcnTypes.ParticipantState state);
    error TooFewRemaining(uint256 taskId);
    error RequestHashMismatch(uint256 taskId, bytes32 expected, bytes32 given);
    error InvalidMinSurvivors(uint256 given, uint256 participants);
    error NotAConsenter(uint256 taskId, address account);
    error AlreadyConsented(uint256 taskId, address participant);
    error AlgorithmNotDropoutTolerant(bytes32 algorithmHash);
    error PartyNotSilent(uint256 taskId, address participant, uint64 lastSeen, uint64 silence);
    error NotDropped(uint256 taskId, address participant);

    event TaskSubmitted(
        uint256 indexed taskId,
        address indexed requester,
        bytes32 indexed algorithmHash,
        uint256[] datasetIds,
        uint32[] datasetVersions,
        address[] participants,
        bytes32 paramsHash,
        address resultRecipient,
        uint64 deadline,
        uint64 epsilon
    );
    /// @notice The hash of the whole stored request (see `requestHash`): what approvals sign.
    event TaskRequestHashed(uint256 indexed taskId, bytes32 requestHash);
    event TaskApproved(uint256 indexed taskId, address indexed owner, address relayer);
    event TaskAuthorised(uint256 indexed taskId);
    event TaskCancelled(uint256 indexed taskId, address indexed by);
    event TaskStarted(uint256 indexed taskId, address indexed participant);
    event TaskRefused(
        uint256 indexed taskId, address indexed participant, PcnTypes.RefusalReason reason, bytes32 detailHash
    );
    event ReceiptSubmitted(
        uint256 indexed taskId,
        address indexed participant,
        bytes32 resultHash,
        bytes32 transcriptHash,
        bytes32 inputFingerprint,
        bytes32 algorithmHash,
        bytes32 deletionHash,
        uint64 startedAt,
        uint64 finishedAt
    );
    event ParticipantDropped(uint256 indexed taskId, address indexed participant, address indexed reportedBy);
    event TaskSurvivorThreshold(uint256 indexed taskId, uint8 minSurvivors);
    event ParticipantConsented(uint256 indexed taskId, address indexed participant);
    event ParticipantHeartbeat(uint256 indexed taskId, address indexed participant);
    event DropoutContested(uint256 indexed taskId, address indexed participant);
    event TaskCompleted(uint256 indexed taskId, bytes32 resultHash);
    event TaskDisputed(uint256 indexed taskId);
    event TaskExpired(uint256 indexed taskId, address indexed by);

    constructor(Consortium consortium_, AlgorithmRegistry algorithms_, DatasetRegistry datasets_)
        EIP712("pcn TaskManager", "1")
    {
        consortium = consortium_;
        algorithms = algorithms_;
        datasets = datasets_;
    }

    // ------------------------------------------------------------------ submission

    /// @notice Submit a task. The caller (an active organisation) is the requester.
    /// Every dataset's policy must already allow this algorithm, requester, recipient and
    /// epsilon; uses and budget are consumed only when the task is authorised.
    /// @return taskId the new task's id (sequential from 1)
    function submit(TaskRequest calldata request) external returns (uint256 taskId) {
        consortium.requireActive(msg.sender);
        consortium.requireActive(request.resultRecipient);
        algorithms.requireUsable(request.algorithmHash);
        uint256 nDatasets = request.datasetIds.length;
        uint256 nParticipants = request.participants.length;
        if (nDatasets == 0 || nDatasets > PcnTypes.MAX_DATASETS_PER_TASK) revert InvalidDatasetCount(nDatasets);
        if (nParticipants == 0 || nParticipants > PcnTypes.MAX_PARTICIPANTS) {
            revert InvalidParticipantCount(nParticipants);
        }
        if (request.deadline <= block.timestamp) revert DeadlineNotInFuture(request.deadline);
        // At least two must be left to finish (one alone learns nothing more than its input);
        // a one-party task has no one to drop.
        uint256 minSurvivors = request.minSurvivors;
        if (minSurvivors > nParticipants || (minSurvivors < 2 && minSurvivors != nParticipants)) {
            revert InvalidMinSurvivors(minSurvivors, nParticipants);
        }

        taskId = ++taskCount;
        _recordParticipants(taskId, request.participants);
        _recordDatasets(taskId, request);
        _recordConsenters(taskId, request.participants);
        _minSurvivors[taskId] = request.minSurvivors;

        Task storage task = _tasks[taskId];
        task.requester = msg.sender;
        task.status = PcnTypes.TaskStatus.Pending;
        task.requiredApprovals = uint8(_approvers[taskId].length);
        task.resultRecipient = request.resultRecipient;
        task.deadline = request.deadline;
        task.epsilon = request.epsilon;
        task.createdAt = uint64(block.timestamp);
        task.algorithmHash = request.algorithmHash;
        task.paramsHash = request.paramsHash;

        _emitSubmitted(taskId, request);
        bytes32 hashed = _hashRequest(taskId);
        _requestHashes[taskId] = hashed;
        emit TaskRequestHashed(taskId, hashed);
        emit TaskSurvivorThreshold(taskId, request.minSurvivors);
    }

    /// @dev The one definition of a task's request hash. Approvals sign it, so an approval of
    /// task N lands on no other task N (a redeployment at the same address, a reorg, a devnet
    /// reset). New request fields are appended to the last group (the Python mirror is
    /// `pcn.chain.binding.request_hash`).
    function _hashRequest(uint256 taskId) private view returns (bytes32) {
        Task storage t = _tasks[taskId];
        uint256[] storage ids = _datasetIds[taskId];
        uint32[] storage versions = _datasetVersions[taskId];
        bytes32[] memory roots = new bytes32[](ids.length);
        for (uint256 i = 0; i < ids.length; ++i) {
            roots[i] = datasets.fingerprint(ids[i], versions[i]).merkleRoot;
        }
        return keccak256(
            bytes.concat(
                abi.encode(block.chainid, address(this), taskId, t.requester, t.algorithmHash),
                abi.encode(ids, versions, roots, _participants[taskId]),
                abi.encode(t.paramsHash, t.resultRecipient, t.deadline, t.epsilon, t.createdAt, _minSurvivors[taskId])
            )
        );
    }

    /// A participant owning none of the inputs (a requester-side recipient, a helper) joins
    /// only by its own on-chain consent: a requester cannot enrol an accomplice unasked.
    function _recordConsenters(uint256 taskId, address[] calldata participants) private {
        for (uint256 i = 0; i < participants.length; ++i) {
            address p = participants[i];
            if (_approverState[taskId][p] == 0) {
                _consentState[taskId][p] = 1;
                _consenters[taskId].push(p);
            }
        }
    }

    function _emitSubmitted(uint256 taskId, TaskRequest calldata request) private {
        emit TaskSubmitted(
            taskId,
            msg.sender,
            request.algorithmHash,
            request.datasetIds,
            _datasetVersions[taskId],
            request.participants,
            request.paramsHash,
            request.resultRecipient,
            request.deadline,
            request.epsilon
        );
    }

    function _recordParticipants(uint256 taskId, address[] calldata participants) private {
        for (uint256 i = 0; i < participants.length; ++i) {
            address p = participants[i];
            consortium.requireActive(p);
            if (_state[taskId][p] != PcnTypes.ParticipantState.None) revert DuplicateParticipant(p);
            _state[taskId][p] = PcnTypes.ParticipantState.Invited;
            _participants[taskId].push(p);
        }
    }

    function _recordDatasets(uint256 taskId, TaskRequest calldata request) private {
        uint256[] calldata ids = request.datasetIds;
        for (uint256 i = 0; i < ids.length; ++i) {
            for (uint256 j = 0; j < i; ++j) {
                if (ids[j] == ids[i]) revert DuplicateDataset(ids[i]);
            }
            datasets.checkUse(ids[i], request.algorithmHash, msg.sender, request.resultRecipient, request.epsilon);
            address owner = datasets.ownerOf(ids[i]);
            if (_state[taskId][owner] == PcnTypes.ParticipantState.None) revert OwnerNotParticipant(ids[i], owner);
            if (_approverState[taskId][owner] == 0) {
                _approverState[taskId][owner] = 1;
                _approvers[taskId].push(owner);
            }
            _datasetIds[taskId].push(ids[i]);
            _datasetVersions[taskId].push(datasets.currentVersion(ids[i]));
        }
    }

    // ------------------------------------------------------------------ authorisation

    /// @notice Approve a task as the owner of one or more of its input datasets.
    /// @param requestHash_ the `requestHash(taskId)` of the request the owner inspected
    function approve(uint256 taskId, bytes32 requestHash_) external {
        _approve(taskId, requestHash_, msg.sender);
    }

    /// @notice Relay an owner's EIP-712 approval. Anyone may submit it.
    /// @param owner the approving dataset owner (the signer)
    /// @param nonce the owner's current nonce (see `nonces`); each signature works once
    /// @param deadline the signature is void after this timestamp
    /// @param requestHash_ the request hash the owner signed; must be the task's `requestHash`
    /// @param signature the 65-byte ECDSA signature over
    /// Approval(taskId, requestHash, owner, nonce, deadline)
    function approveBySig(
        uint256 taskId,
        bytes32 requestHash_,
        address owner,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert ApprovalSignatureExpired(deadline);
        bytes32 digest = _approvalDigest(taskId, requestHash_, owner, nonce, deadline);
        // The third value only details why recovery failed (bad length or s); both `err` and
        // `recovered` are checked, so any failure reverts with InvalidApprovalSignature.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || recovered != owner) {
            revert InvalidApprovalSignature(owner, recovered);
        }
        _useCheckedNonce(owner, nonce);
        _approve(taskId, requestHash_, owner);
    }

    /// @notice The EIP-712 digest an owner signs to approve a task (for clients).
    function approvalDigest(uint256 taskId, bytes32 requestHash_, address owner, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _approvalDigest(taskId, requestHash_, owner, nonce, deadline);
    }

    function _approvalDigest(uint256 taskId, bytes32 requestHash_, address owner, uint256 nonce, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(APPROVAL_TYPEHASH, taskId, requestHash_, owner, nonce, deadline)));
    }

    function _approve(uint256 taskId, bytes32 requestHash_, address owner) private {
        Task storage task = _known(taskId);
        bytes32 expected = _requestHashes[taskId];
        if (requestHash_ != expected) revert RequestHashMismatch(taskId, expected, requestHash_);
        if (task.status != PcnTypes.TaskStatus.Pending) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        uint8 st = _approverState[taskId][owner];
        if (st == 0) revert NotAnApprover(taskId, owner);
        if (st == 2) revert AlreadyApproved(taskId, owner);
        consortium.requireActive(owner);
        _approverState[taskId][owner] = 2;
        task.approvals += 1;
        emit TaskApproved(taskId, owner, msg.sender);
        _authoriseIfReady(taskId, task);
    }

    /// @notice A participant that owns none of the task's datasets agrees to take part.
    /// Authorisation needs every owner's approval and every such participant's consent.
    function consent(uint256 taskId) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Pending) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        uint8 st = _consentState[taskId][msg.sender];
        if (st == 0) revert NotAConsenter(taskId, msg.sender);
        if (st == 2) revert AlreadyConsented(taskId, msg.sender);
        _consentState[taskId][msg.sender] = 2;
        _consentsGiven[taskId] += 1;
        emit ParticipantConsented(taskId, msg.sender);
        _authoriseIfReady(taskId, task);
    }

    function _authoriseIfReady(uint256 taskId, Task storage task) private {
        if (task.approvals == task.requiredApprovals && _consentsGiven[taskId] == _consenters[taskId].length) {
            _authorise(taskId, task);
        }
    }

    function _authorise(uint256 taskId, Task storage task) private {
        algorithms.requireUsable(task.algorithmHash);
        consortium.requireActive(task.requester);
        consortium.requireActive(task.resultRecipient);
        uint256[] storage ids = _datasetIds[taskId];
        for (uint256 i = 0; i < ids.length; ++i) {
            uint32 current = datasets.currentVersion(ids[i]);
            uint32 submitted = _datasetVersions[taskId][i];
            if (current != submitted) revert DatasetVersionChanged(ids[i], submitted, current);
            // `datasets` is the deployment's own immutable DatasetRegistry: it makes no outside
            // call, so nothing can re-enter between this call and TaskAuthorised below.
            // slither-disable-next-line reentrancy-events
            datasets.consume(ids[i], taskId, task.algorithmHash, task.requester, task.resultRecipient, task.epsilon);
            // slither-disable-next-line reentrancy-events
            datasets.checkParticipants(ids[i], _participants[taskId]);
        }
        task.status = PcnTypes.TaskStatus.Authorised;
        task.authorisedAt = uint64(block.timestamp);
        emit TaskAuthorised(taskId);
    }

    /// @notice Cancel a task before any participant has started. Requester only.
    /// Uses and budget already consumed at authorisation are not refunded: the owners
    /// committed them, and the chain cannot prove no node read its data.
    function cancel(uint256 taskId) external {
        Task storage task = _known(taskId);
        if (msg.sender != task.requester) revert NotRequester(taskId, msg.sender);
        consortium.requireActive(msg.sender);
        if (task.status != PcnTypes.TaskStatus.Pending && task.status != PcnTypes.TaskStatus.Authorised) {
            revert InvalidTaskStatus(taskId, task.status);
        }
        task.status = PcnTypes.TaskStatus.Cancelled;
        emit TaskCancelled(taskId, msg.sender);
    }

    /// @notice Mark a task Expired once its deadline has passed without an outcome. Anyone.
    function expire(uint256 taskId) external {
        Task storage task = _known(taskId);
        if (!_isOpen(task.status)) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp <= task.deadline) revert TaskNotExpired(taskId, task.deadline);
        task.status = PcnTypes.TaskStatus.Expired;
        emit TaskExpired(taskId, msg.sender);
    }

    // ------------------------------------------------------------------ execution

    /// @notice A participant records that it passed every check and started its side.
    function start(uint256 taskId) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Authorised && task.status != PcnTypes.TaskStatus.Running) {
            revert InvalidTaskStatus(taskId, task.status);
        }
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        if (_state[taskId][msg.sender] != PcnTypes.ParticipantState.Invited) revert AlreadyStarted(taskId, msg.sender);
        _state[taskId][msg.sender] = PcnTypes.ParticipantState.Started;
        _lastSeen[taskId][msg.sender] = uint64(block.timestamp);
        task.startedCount += 1;
        task.status = PcnTypes.TaskStatus.Running;
        emit TaskStarted(taskId, msg.sender);
    }

    /// @notice A participant refuses the task (a failed check or a failed run). Terminal.
    /// @param reason one of PcnTypes.RefusalReason (not None)
    /// @param detailHash hash of the off-chain detail of the refusal (in the node's local log)
    function refuse(uint256 taskId, uint8 reason, bytes32 detailHash) external {
        Task storage task = _participantTask(taskId);
        if (!_isOpen(task.status)) revert InvalidTaskStatus(taskId, task.status);
        if (reason == 0 || reason > uint8(type(PcnTypes.RefusalReason).max)) revert InvalidRefusalReason(reason);
        PcnTypes.ParticipantState st = _state[taskId][msg.sender];
        if (st == PcnTypes.ParticipantState.Receipted || st == PcnTypes.ParticipantState.Dropped) {
            revert AlreadyFinished(taskId, msg.sender);
        }
        _state[taskId][msg.sender] = PcnTypes.ParticipantState.Refused;
        task.status = PcnTypes.TaskStatus.Refused;
        task.refusalReason = PcnTypes.RefusalReason(reason);
        emit TaskRefused(taskId, msg.sender, PcnTypes.RefusalReason(reason), detailHash);
    }

    /// @notice A participant posts its receipt. When the last receipt arrives the task is
    /// Completed if every receipt names the same result hash and the task's algorithm
    /// hash, and Disputed otherwise.
    function submitReceipt(uint256 taskId, Receipt calldata receipt) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Running) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        PcnTypes.ParticipantState st = _state[taskId][msg.sender];
        if (st == PcnTypes.ParticipantState.Invited) revert NotStarted(taskId, msg.sender);
        if (st != PcnTypes.ParticipantState.Started) revert AlreadyFinished(taskId, msg.sender);
        if (receipt.finishedAt < receipt.startedAt) revert InvalidReceiptTimes(receipt.startedAt, receipt.finishedAt);
        _state[taskId][msg.sender] = PcnTypes.ParticipantState.Receipted;
        _lastSeen[taskId][msg.sender] = uint64(block.timestamp);
        _receipts[taskId][msg.sender] = receipt;
        task.receiptCount += 1;
        emit ReceiptSubmitted(
            taskId,
            msg.sender,
            receipt.resultHash,
            receipt.transcriptHash,
            receipt.inputFingerprint,
            receipt.algorithmHash,
            receipt.deletionHash,
            receipt.startedAt,
            receipt.finishedAt
        );
        if (task.receiptCount + _droppedCount[taskId] == _participants[taskId].length) _finalise(taskId, task);
    }

    /// @notice A started participant shows it is alive, so that it cannot be reported dropped
    /// for the next `Consortium.dropoutSilence` seconds.
    function heartbeat(uint256 taskId) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Running) revert InvalidTaskStatus(taskId, task.status);
        if (_state[taskId][msg.sender] != PcnTypes.ParticipantState.Started) revert NotStarted(taskId, msg.sender);
        _lastSeen[taskId][msg.sender] = uint64(block.timestamp);
        emit ParticipantHeartbeat(taskId, msg.sender);
    }

    /// @notice The result recipient reports a started participant that stopped answering
    /// mid-protocol, so that the task can complete on the others' receipts. Only for an
    /// algorithm the consortium approved as dropout-tolerant (fedavg's secure aggregation),
    /// only once the party has been silent on chain for `Consortium.dropoutSilence`, and never
    /// below the request's `minSurvivors`. The report is public: the auditor lists every
    /// dropout; the dropped party can no longer receipt or refuse, but can `contestDropout`.
    function reportDropout(uint256 taskId, address participant) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Running) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        if (msg.sender != task.resultRecipient) revert NotResultRecipient(taskId, msg.sender);
        if (_state[taskId][msg.sender] != PcnTypes.ParticipantState.Started) revert NotStarted(taskId, msg.sender);
        PcnTypes.ParticipantState st = _state[taskId][participant];
        if (participant == msg.sender || st != PcnTypes.ParticipantState.Started) {
            revert CannotDrop(taskId, participant, st);
        }
        if (!algorithms.isDropoutTolerant(task.algorithmHash)) revert AlgorithmNotDropoutTolerant(task.algorithmHash);
        uint64 seen = _lastSeen[taskId][participant];
        uint64 silence = consortium.dropoutSilence();
        if (block.timestamp <= uint256(seen) + silence) revert PartyNotSilent(taskId, participant, seen, silence);
        uint256 parts = _participants[taskId].length;
        if (parts - _droppedCount[taskId] - 1 < _minSurvivors[taskId]) revert TooFewRemaining(taskId);
        _state[taskId][participant] = PcnTypes.ParticipantState.Dropped;
        _droppedCount[taskId] += 1;
        // Never the last step: the reporter itself has not receipted yet, so its receipt is.
        emit ParticipantDropped(taskId, participant, msg.sender);
    }

    /// @notice A participant reported dropped objects: it was alive. While the task runs,
    /// it becomes Disputed (and so can never complete); the auditor lists the contest.
    function contestDropout(uint256 taskId) external {
        Task storage task = _participantTask(taskId);
        if (task.status != PcnTypes.TaskStatus.Running) revert InvalidTaskStatus(taskId, task.status);
        if (block.timestamp > task.deadline) revert TaskDeadlinePassed(taskId, task.deadline);
        if (_state[taskId][msg.sender] != PcnTypes.ParticipantState.Dropped) revert NotDropped(taskId, msg.sender);
        task.status = PcnTypes.TaskStatus.Disputed;
        emit DropoutContested(taskId, msg.sender);
        emit TaskDisputed(taskId);
    }

    function _finalise(uint256 taskId, Task storage task) private {
        address[] storage parts = _participants[taskId];
        bytes32 result = bytes32(0);
        bool seen = false;
        bool agree = true;
        for (uint256 i = 0; i < parts.length; ++i) {
            if (_state[taskId][parts[i]] != PcnTypes.ParticipantState.Receipted) continue; // dropped
            Receipt storage r = _receipts[taskId][parts[i]];
            if (!seen) {
                result = r.resultHash;
                seen = true;
            }
            if (r.resultHash != result || r.algorithmHash != task.algorithmHash) {
                agree = false;
                break;
            }
        }
        // reportDropout keeps this true; checked again so no path completes below the threshold
        if (task.receiptCount < _minSurvivors[taskId]) agree = false;
        if (agree) {
            task.status = PcnTypes.TaskStatus.Completed;
            task.resultHash = result;
            emit TaskCompleted(taskId, result);
        } else {
            task.status = PcnTypes.TaskStatus.Disputed;
            emit TaskDisputed(taskId);
        }
    }

    // ------------------------------------------------------------------ views

    /// @notice The task record (reverts for unknown ids).
    function task(uint256 taskId) external view returns (Task memory) {
        return _known(taskId);
    }

    /// @notice The hash of the whole request as stored at submission (chain id, this contract,
    /// task id, requester, algorithm, datasets with pinned versions and Merkle roots,
    /// participants, params hash, recipient, deadline, ε, creation time). Approvals name it.
    function requestHash(uint256 taskId) external view returns (bytes32) {
        _known(taskId);
        return _requestHashes[taskId];
    }

    /// @notice Input datasets and the versions pinned at submission.
    function taskDatasets(uint256 taskId) external view returns (uint256[] memory ids, uint32[] memory versions) {
        _known(taskId);
        return (_datasetIds[taskId], _datasetVersions[taskId]);
    }

    /// @notice Participants of a task, in submission order.
    function taskParticipants(uint256 taskId) external view returns (address[] memory) {
        _known(taskId);
        return _participants[taskId];
    }

    /// @notice Owners whose approval the task needs, and whether each has approved.
    function taskApprovers(uint256 taskId) external view returns (address[] memory owners, bool[] memory approved) {
        _known(taskId);
        owners = _approvers[taskId];
        approved = new bool[](owners.length);
        for (uint256 i = 0; i < owners.length; ++i) {
            approved[i] = _approverState[taskId][owners[i]] == 2;
        }
    }

    /// @notice A participant's state in a task.
    function participantState(uint256 taskId, address participant) external view returns (PcnTypes.ParticipantState) {
        _known(taskId);
        return _state[taskId][participant];
    }

    /// @notice How many participants the result recipient reported dropped.
    function droppedCount(uint256 taskId) external view returns (uint256) {
        _known(taskId);
        return _droppedCount[taskId];
    }

    /// @notice The fewest receipts the task can complete with (from the request).
    function minSurvivors(uint256 taskId) external view returns (uint8) {
        _known(taskId);
        return _minSurvivors[taskId];
    }

    /// @notice Participants owning no input dataset, and whether each has consented.
    function taskConsents(uint256 taskId) external view returns (address[] memory parties, bool[] memory given) {
        _known(taskId);
        parties = _consenters[taskId];
        given = new bool[](parties.length);
        for (uint256 i = 0; i < parties.length; ++i) {
            given[i] = _consentState[taskId][parties[i]] == 2;
        }
    }

    /// @notice When a participant last showed a sign of life on chain (start, heartbeat,
    /// receipt); zero before it started.
    function lastSeen(uint256 taskId, address participant) external view returns (uint64) {
        _known(taskId);
        return _lastSeen[taskId][participant];
    }

    /// @notice A participant's receipt (zero when none yet).
    function receipt(uint256 taskId, address participant) external view returns (Receipt memory) {
        _known(taskId);
        return _receipts[taskId][participant];
    }

    function _known(uint256 taskId) private view returns (Task storage task_) {
        task_ = _tasks[taskId];
        if (task_.status == PcnTypes.TaskStatus.None) revert UnknownTask(taskId);
    }

    function _participantTask(uint256 taskId) private view returns (Task storage task_) {
        task_ = _known(taskId);
        if (_state[taskId][msg.sender] == PcnTypes.ParticipantState.None) revert NotParticipant(taskId, msg.sender);
        consortium.requireActive(msg.sender);
    }

    function _isOpen(PcnTypes.TaskStatus s) private pure returns (bool) {
        return
            s == PcnTypes.TaskStatus.Pending || s == PcnTypes.TaskStatus.Authorised || s == PcnTypes.TaskStatus.Running;
    }
}
