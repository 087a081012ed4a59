// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CommonBase} from "forge-std/Base.sol";
import {StdCheats} from "forge-std/StdCheats.sol";
import {StdUtils} from "forge-std/StdUtils.sol";
import {Consortium} from "../../src/Consortium.sol";
import {DatasetRegistry} from "../../src/DatasetRegistry.sol";
import {AlgorithmRegistry} from "../../src/AlgorithmRegistry.sol";
import {TaskManager} from "../../src/TaskManager.sol";
import {PcnTypes} from "../../src/PcnTypes.sol";

/// @notice Drives random but well-formed call sequences against the TaskManager for the
/// invariant tests, and keeps ghost state computed independently of the contracts.
contract PcnHandler is CommonBase, StdCheats, StdUtils {
    uint64 internal constant EPS = PcnTypes.EPSILON_SCALE;
    uint256 internal constant MALLORY_KEY = uint256(keccak256("mallory"));

    Consortium public immutable consortium;
    DatasetRegistry public immutable datasets;
    TaskManager public immutable tm;
    address public immutable admin;
    bytes32 public immutable algo;

    address[] public orgs;
    mapping(address => uint256) internal keyOf;
    uint256[] public datasetIds;
    uint256[] public taskIds;

    // ------------------------------------------------------------------ ghost state

    /// Successful start / refuse / submitReceipt / approve / submit by a suspended organisation.
    uint256 public ghostSuccessWhileSuspended;
    /// How many such calls were attempted (to show the property is exercised).
    uint256 public ghostAttemptsWhileSuspended;
    /// Uses and epsilon charged to each dataset, summed from the authorisations observed.
    mapping(uint256 datasetId => uint64) public ghostUses;
    mapping(uint256 datasetId => uint64) public ghostEpsilon;
    /// Approvals observed to succeed, per task and owner.
    mapping(uint256 taskId => mapping(address owner => bool)) public ghostApproved;
    /// Receipt result hash and algorithm hash each participant submitted successfully.
    mapping(uint256 taskId => mapping(address participant => bytes32)) public ghostResult;
    mapping(uint256 taskId => mapping(address participant => bytes32)) public ghostAlgo;
    /// The first terminal status each task was seen in.
    mapping(uint256 taskId => PcnTypes.TaskStatus) public ghostTerminal;
    /// Successful calls per action, for the call summary.
    mapping(bytes32 action => uint256) public successes;
    /// #13.5: successful dropouts on a task whose algorithm is not dropout-tolerant (must stay
    /// 0), and before the party's silence period ran out (must stay 0); attempts of both.
    uint256 public ghostDropsNonTolerant;
    uint256 public ghostDropsBeforeSilence;
    uint256 public ghostDropAttempts;
    /// Participants' last sign of life observed by the handler (start, receipt).
    mapping(uint256 taskId => mapping(address participant => uint256)) public ghostLastSeen;
    /// #13.7: tasks submitted with an algorithm the admin never approved (must stay 0).
    uint256 public ghostUnapprovedUsed;
    uint256 public ghostUnapprovedAttempts;
    /// Tasks seen in each outcome.
    mapping(PcnTypes.TaskStatus => uint256) public outcomes;

    constructor(
        Consortium consortium_,
        DatasetRegistry datasets_,
        TaskManager tm_,
        address admin_,
        bytes32 algo_,
        address[] memory orgs_,
        uint256[] memory keys_,
        uint256[] memory datasetIds_
    ) {
        consortium = consortium_;
        datasets = datasets_;
        tm = tm_;
        admin = admin_;
        algo = algo_;
        orgs = orgs_;
        for (uint256 i = 0; i < orgs_.length; ++i) {
            keyOf[orgs_[i]] = keys_[i];
        }
        datasetIds = datasetIds_;
    }

    modifier recordTerminal() {
        _;
        for (uint256 i = 0; i < taskIds.length; ++i) {
            uint256 id = taskIds[i];
            PcnTypes.TaskStatus s = tm.task(id).status;
            if (_isTerminal(s) && ghostTerminal[id] == PcnTypes.TaskStatus.None) {
                ghostTerminal[id] = s;
                outcomes[s] += 1;
            }
        }
    }

    // ------------------------------------------------------------------ views for the invariants

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    function datasetCount() external view returns (uint256) {
        return datasetIds.length;
    }

    function orgCount() external view returns (uint256) {
        return orgs.length;
    }

    // ------------------------------------------------------------------ actions

    function submit(
        uint256 requesterSeed,
        uint256 recipientSeed,
        uint256 dsMask,
        bool withComputeParty,
        uint64 eps,
        uint32 ttl
    ) external recordTerminal {
        _submit(requesterSeed, recipientSeed, dsMask, withComputeParty, eps, ttl);
    }

    function _submit(
        uint256 requesterSeed,
        uint256 recipientSeed,
        uint256 dsMask,
        bool withComputeParty,
        uint64 eps,
        uint32 ttl
    ) internal returns (bool) {
        (uint256[] memory ids, address[] memory parts) = _pickInputs(dsMask, withComputeParty);
        address requester = orgs[requesterSeed % orgs.length];
        TaskManager.TaskRequest memory r = TaskManager.TaskRequest({
            algorithmHash: algo,
            datasetIds: ids,
            participants: parts,
            paramsHash: keccak256(abi.encode(taskIds.length)),
            resultRecipient: orgs[recipientSeed % orgs.length],
            deadline: uint64(block.timestamp + _bound(ttl, 1 hours, 3 days)),
            epsilon: uint64(_bound(eps, 0, 3 * EPS)),
            minSurvivors: _survivors(parts.length, ttl)
        });
        bool suspended = _suspended(requester);
        vm.prank(requester);
        try tm.submit(r) returns (uint256 id) {
            taskIds.push(id);
            _success("submit", suspended);
            return true;
        } catch {
            return false;
        }
    }

    /// A non-empty subset of the datasets; participants are their distinct owners, plus the
    /// organisation without data as a compute party when asked.
    function _pickInputs(uint256 dsMask, bool withComputeParty)
        internal
        view
        returns (uint256[] memory ids, address[] memory parts)
    {
        // forge-lint: disable-next-line(incorrect-shift) -- a mask with one bit per dataset
        dsMask = _bound(dsMask, 1, (1 << datasetIds.length) - 1);
        ids = new uint256[](datasetIds.length);
        parts = new address[](datasetIds.length + 1);
        uint256 nIds;
        uint256 nParts;
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            // forge-lint: disable-next-line(incorrect-shift) -- bit i of the dataset mask
            if (dsMask & (1 << i) == 0) continue;
            ids[nIds++] = datasetIds[i];
            address owner = datasets.ownerOf(datasetIds[i]);
            bool seen;
            for (uint256 j = 0; j < nParts; ++j) {
                if (parts[j] == owner) seen = true;
            }
            if (!seen) parts[nParts++] = owner;
        }
        if (withComputeParty) parts[nParts++] = orgs[orgs.length - 1];
        assembly ("memory-safe") {
            mstore(ids, nIds)
            mstore(parts, nParts)
        }
    }

    function approve(uint256 taskSeed, uint256 ownerSeed, bool anyOrg) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        address owner = anyOrg ? orgs[ownerSeed % orgs.length] : _pickApprover(id, ownerSeed);
        PcnTypes.TaskStatus before = tm.task(id).status;
        bool suspended = _suspended(owner);
        bytes32 requestHash = tm.requestHash(id);
        vm.prank(owner);
        try tm.approve(id, requestHash) {
            _afterApproval(id, owner, before);
            _success("approve", suspended);
        } catch {}
    }

    function approveBySig(uint256 taskSeed, uint256 ownerSeed, uint256 relayerSeed, uint8 mode)
        external
        recordTerminal
    {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        address owner = _pickApprover(id, ownerSeed);
        (uint256 nonce, uint256 deadline, bytes memory sig) = _signApproval(id, owner, mode % 8);
        PcnTypes.TaskStatus before = tm.task(id).status;
        bool suspended = _suspended(owner);
        bytes32 requestHash = tm.requestHash(id);
        vm.prank(orgs[relayerSeed % orgs.length]);
        try tm.approveBySig(id, requestHash, owner, nonce, deadline, sig) {
            _afterApproval(id, owner, before);
            _success("approveBySig", suspended);
        } catch {}
    }

    /// mode 1: wrong signer, 2: wrong nonce, 3: expired; otherwise a valid signature.
    function _signApproval(uint256 id, address owner, uint8 mode)
        internal
        view
        returns (uint256 nonce, uint256 deadline, bytes memory sig)
    {
        nonce = tm.nonces(owner);
        deadline = block.timestamp + 1 hours;
        uint256 key = keyOf[owner];
        if (mode == 1) key = MALLORY_KEY;
        if (mode == 2) nonce += 1;
        if (mode == 3) deadline = block.timestamp - 1;
        sig = _signDigest(key, _approvalDigestOf(id, owner, nonce, deadline));
    }

    function _approvalDigestOf(uint256 id, address owner, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        return tm.approvalDigest(id, tm.requestHash(id), owner, nonce, deadline);
    }

    function _signDigest(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function cancel(uint256 taskSeed, uint256 callerSeed, bool byRequester) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        // the requester one time in three, otherwise anyone (mostly NotRequester)
        address caller = byRequester && callerSeed % 3 == 0 ? tm.task(id).requester : orgs[callerSeed % orgs.length];
        vm.prank(caller);
        try tm.cancel(id) {
            successes["cancel"] += 1;
        } catch {}
    }

    function start(uint256 taskSeed, uint256 partSeed) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        address p = _pickParticipant(id, partSeed);
        bool suspended = _suspended(p);
        vm.prank(p);
        try tm.start(id) {
            _success("start", suspended);
        } catch {}
    }

    function refuse(uint256 taskSeed, uint256 partSeed, uint8 reason) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        address p = _pickParticipant(id, partSeed);
        reason = uint8(_bound(reason, 0, 35)); // only 1..17 are valid: about half the calls
        bool suspended = _suspended(p);
        vm.prank(p);
        try tm.refuse(id, reason, keccak256("detail")) {
            _success("refuse", suspended);
        } catch {}
    }

    function submitReceipt(uint256 taskSeed, uint256 partSeed, uint8 agreeSeed) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        address p = _pickParticipant(id, partSeed);
        _receipt(id, p, agreeSeed);
    }

    /// Moves a task up to `steps` steps along the happy path with the right actors, so that
    /// deep states (Running, Completed, Disputed) are reached within short call sequences.
    /// When the picked task is finished (or there is none), submits a fresh one first.
    function advance(uint256 taskSeed, uint8 agreeSeed, uint8 steps) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok || _isTerminal(tm.task(id).status)) {
            uint256 h = uint256(keccak256(abi.encode(taskSeed, agreeSeed)));
            // forge-lint: disable-next-line(unsafe-typecast) -- deliberate truncation of a random word
            if (!_submit(h, h >> 8, h >> 16, (h >> 24) & 1 == 1, uint64(h >> 32), uint32(h >> 96))) return;
            id = taskIds[taskIds.length - 1];
        }
        steps = uint8(_bound(steps, 1, 6));
        for (uint256 i = 0; i < steps; ++i) {
            // forge-lint: disable-next-line(unsafe-typecast) -- deliberate truncation of a random word
            if (!_step(id, uint8(uint256(agreeSeed) + i * 37))) return;
        }
    }

    /// One happy-path step; false when there is nothing to do or the step reverted.
    function _step(uint256 id, uint8 agreeSeed) internal returns (bool) {
        PcnTypes.TaskStatus s = tm.task(id).status;
        if (s == PcnTypes.TaskStatus.Pending) {
            (address[] memory parties, bool[] memory given) = tm.taskConsents(id);
            for (uint256 i = 0; i < parties.length; ++i) {
                if (given[i]) continue;
                bool suspended = _suspended(parties[i]);
                vm.prank(parties[i]);
                try tm.consent(id) {
                    _afterApproval(id, parties[i], s);
                    _success("consent", suspended);
                    return true;
                } catch {
                    return false;
                }
            }
            (address[] memory owners, bool[] memory approved) = tm.taskApprovers(id);
            for (uint256 i = 0; i < owners.length; ++i) {
                if (approved[i]) continue;
                bool suspended = _suspended(owners[i]);
                bytes32 requestHash = tm.requestHash(id);
                vm.prank(owners[i]);
                try tm.approve(id, requestHash) {
                    _afterApproval(id, owners[i], s);
                    _success("approve", suspended);
                    return true;
                } catch {
                    return false;
                }
            }
        } else if (s == PcnTypes.TaskStatus.Authorised || s == PcnTypes.TaskStatus.Running) {
            address[] memory parts = tm.taskParticipants(id);
            for (uint256 i = 0; i < parts.length; ++i) {
                if (tm.participantState(id, parts[i]) != PcnTypes.ParticipantState.Invited) continue;
                bool suspended = _suspended(parts[i]);
                vm.prank(parts[i]);
                try tm.start(id) {
                    ghostLastSeen[id][parts[i]] = block.timestamp;
                    _success("start", suspended);
                    return true;
                } catch {
                    return false;
                }
            }
            for (uint256 i = 0; i < parts.length; ++i) {
                if (tm.participantState(id, parts[i]) != PcnTypes.ParticipantState.Started) continue;
                return _receipt(id, parts[i], agreeSeed);
            }
        }
        return false;
    }

    /// The task's result recipient reports a participant dropped, after a random wait.
    function reportDropout(uint256 taskSeed, uint256 partySeed, uint32 wait) external recordTerminal {
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        vm.warp(block.timestamp + _bound(wait, 0, 2 * uint256(consortium.dropoutSilence())));
        address[] memory parts = tm.taskParticipants(id);
        address victim = parts[partySeed % parts.length];
        TaskManager.Task memory t = tm.task(id);
        bool tolerant = tm.algorithms().isDropoutTolerant(t.algorithmHash);
        ghostDropAttempts += 1;
        vm.prank(t.resultRecipient);
        try tm.reportDropout(id, victim) {
            if (!tolerant) ghostDropsNonTolerant += 1;
            if (block.timestamp <= ghostLastSeen[id][victim] + consortium.dropoutSilence()) {
                ghostDropsBeforeSilence += 1;
            }
            successes["reportDropout"] += 1;
        } catch {}
    }

    /// An organisation registers a fresh algorithm (nobody approves it) and submits a task with it.
    function submitUnapproved(uint256 seed, uint256 requesterSeed) external recordTerminal {
        bytes32 code = keccak256(abi.encode("unapproved", seed));
        AlgorithmRegistry registry = tm.algorithms();
        vm.prank(orgs[seed % orgs.length]);
        try registry.register(code, "stats", "1", bytes32(0)) {} catch {}
        (uint256[] memory ids, address[] memory parts) = _pickInputs(seed, false);
        TaskManager.TaskRequest memory r = TaskManager.TaskRequest({
            algorithmHash: code,
            datasetIds: ids,
            participants: parts,
            paramsHash: keccak256("unapproved"),
            resultRecipient: orgs[requesterSeed % orgs.length],
            deadline: uint64(block.timestamp + 1 days),
            epsilon: 0,
            minSurvivors: uint8(parts.length)
        });
        ghostUnapprovedAttempts += 1;
        vm.prank(orgs[requesterSeed % orgs.length]);
        try tm.submit(r) returns (uint256 id) {
            taskIds.push(id);
            ghostUnapprovedUsed += 1;
        } catch {}
    }

    /// Suspends an active organisation or reinstates a suspended one (admin).
    function suspendOrReinstate(uint256 orgSeed) external recordTerminal {
        address org = orgs[orgSeed % orgs.length];
        vm.startPrank(admin);
        if (consortium.isActive(org)) {
            try consortium.suspend(org) {
                successes["suspend"] += 1;
            } catch {}
        } else {
            try consortium.reinstate(org) {
                successes["reinstate"] += 1;
            } catch {}
        }
        vm.stopPrank();
    }

    function warpAndExpire(uint32 dt, uint256 taskSeed) external recordTerminal {
        vm.warp(block.timestamp + _bound(dt, 1 minutes, 2 days));
        (bool ok, uint256 id) = _pickTask(taskSeed);
        if (!ok) return;
        try tm.expire(id) {
            successes["expire"] += 1;
        } catch {}
    }

    /// One call in four sets arbitrary limits (often below consumption, which must revert);
    /// otherwise the owner tops the policy up from what was consumed.
    function setPolicyLimits(uint256 dsSeed, uint64 maxUses, uint64 epsilonTotal, uint32 expiryIn)
        external
        recordTerminal
    {
        uint256 ds = datasetIds[dsSeed % datasetIds.length];
        DatasetRegistry.Dataset memory d = datasets.dataset(ds);
        DatasetRegistry.PolicyLimits memory lim;
        if ((dsSeed / 8) % 4 == 0) {
            lim.maxUses = uint64(_bound(maxUses, 0, 12));
            lim.epsilonTotal = uint64(_bound(epsilonTotal, 0, 20 * EPS));
            lim.expiry = uint64(block.timestamp + _bound(expiryIn, 0, 60 days));
        } else {
            lim.maxUses = d.uses + uint64(_bound(maxUses, 0, 6));
            lim.epsilonTotal = d.epsilonSpent + uint64(_bound(epsilonTotal, 0, 8 * EPS));
            lim.expiry = uint64(block.timestamp + _bound(expiryIn, 1 days, 60 days));
        }
        vm.prank(d.owner);
        try datasets.setPolicyLimits(ds, lim) {
            successes["setPolicyLimits"] += 1;
        } catch {}
    }

    /// Publishes a new dataset version (one call in four), which voids pending tasks on it.
    function publishVersion(uint256 dsSeed) external recordTerminal {
        if (dsSeed % 4 != 0) return;
        uint256 ds = datasetIds[(dsSeed / 4) % datasetIds.length];
        DatasetRegistry.Fingerprint memory fp = DatasetRegistry.Fingerprint({
            merkleRoot: keccak256(abi.encode(ds, block.timestamp, "root")),
            schemaHash: keccak256("schema"),
            metadataHash: bytes32(0),
            rowCount: 10,
            registeredAt: 0
        });
        vm.prank(datasets.ownerOf(ds));
        try datasets.publishVersion(ds, fp) {
            successes["publishVersion"] += 1;
        } catch {}
    }

    // ------------------------------------------------------------------ internals

    /// A valid survivor threshold: 2..n (n for a one-party task).
    function _survivors(uint256 n, uint256 seed) internal pure returns (uint8) {
        return uint8(n < 2 ? n : _bound(seed, 2, n));
    }

    function _receipt(uint256 id, address p, uint8 agreeSeed) internal returns (bool) {
        bytes32 taskAlgo = tm.task(id).algorithmHash;
        bytes32 result = keccak256(abi.encode("result", id));
        bytes32 usedAlgo = taskAlgo;
        uint8 mode = agreeSeed % 8;
        if (mode == 0) result = keccak256(abi.encode("different", p)); // disagree on the result
        if (mode == 1) usedAlgo = keccak256(abi.encode("other code", p)); // ran other code
        TaskManager.Receipt memory rc = TaskManager.Receipt({
            resultHash: result,
            transcriptHash: keccak256(abi.encode("transcript", id, p)),
            inputFingerprint: keccak256("input"),
            algorithmHash: usedAlgo,
            deletionHash: keccak256("deleted"),
            startedAt: uint64(block.timestamp),
            finishedAt: uint64(block.timestamp)
        });
        bool suspended = _suspended(p);
        vm.prank(p);
        try tm.submitReceipt(id, rc) {
            ghostLastSeen[id][p] = block.timestamp;
            ghostResult[id][p] = result;
            ghostAlgo[id][p] = usedAlgo;
            _success("submitReceipt", suspended);
            return true;
        } catch {
            return false;
        }
    }

    function _afterApproval(uint256 id, address owner, PcnTypes.TaskStatus before) internal {
        ghostApproved[id][owner] = true;
        TaskManager.Task memory t = tm.task(id);
        if (before == PcnTypes.TaskStatus.Pending && t.status == PcnTypes.TaskStatus.Authorised) {
            (uint256[] memory ids,) = tm.taskDatasets(id);
            for (uint256 i = 0; i < ids.length; ++i) {
                ghostUses[ids[i]] += 1;
                ghostEpsilon[ids[i]] += t.epsilon;
            }
            successes["authorised"] += 1;
        }
    }

    function _success(bytes32 action, bool whileSuspended) internal {
        successes[action] += 1;
        if (whileSuspended) ghostSuccessWhileSuspended += 1;
    }

    function _suspended(address org) internal returns (bool s) {
        s = consortium.organisation(org).status == PcnTypes.OrgStatus.Suspended;
        if (s) ghostAttemptsWhileSuspended += 1;
    }

    /// Three times in four the newest task, otherwise any task.
    function _pickTask(uint256 seed) internal view returns (bool, uint256) {
        uint256 n = taskIds.length;
        if (n == 0) return (false, 0);
        if (seed % 4 != 0) return (true, taskIds[n - 1]);
        return (true, taskIds[(seed / 4) % n]);
    }

    function _pickApprover(uint256 id, uint256 seed) internal view returns (address) {
        (address[] memory owners,) = tm.taskApprovers(id);
        return owners[seed % owners.length];
    }

    function _pickParticipant(uint256 id, uint256 seed) internal view returns (address) {
        address[] memory parts = tm.taskParticipants(id);
        if (seed % 8 == 7) return orgs[(seed / 8) % orgs.length]; // sometimes anyone
        return parts[seed % parts.length];
    }

    function _isTerminal(PcnTypes.TaskStatus s) internal pure returns (bool) {
        return s == PcnTypes.TaskStatus.Completed || s == PcnTypes.TaskStatus.Disputed
            || s == PcnTypes.TaskStatus.Refused || s == PcnTypes.TaskStatus.Cancelled
            || s == PcnTypes.TaskStatus.Expired;
    }
}
