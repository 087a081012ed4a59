// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "forge-std/Test.sol";
import {Consortium} from "../../src/Consortium.sol";
import {AlgorithmRegistry} from "../../src/AlgorithmRegistry.sol";
import {DatasetRegistry} from "../../src/DatasetRegistry.sol";
import {TaskManager} from "../../src/TaskManager.sol";
import {AuditLog} from "../../src/AuditLog.sol";
import {PcnTypes} from "../../src/PcnTypes.sol";

/// @notice Shared deployment for every pcn test: the five contracts wired as in production,
/// four active organisations (alice, bob, carol own one dataset each; dave owns none and is the
/// default requester and result recipient), one registered algorithm and permissive policies.
abstract contract PcnFixture is Test {
    bytes32 internal constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant APPROVAL_TYPEHASH =
        keccak256("Approval(uint256 taskId,bytes32 requestHash,address owner,uint256 nonce,uint256 deadline)");
    /// secp256k1 group order, to build the malleable twin of a signature.
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    uint64 internal constant EPS = PcnTypes.EPSILON_SCALE; // one epsilon
    uint64 internal constant T0 = 1_700_000_000;
    uint64 internal constant POLICY_EXPIRY = T0 + 365 days;
    uint64 internal constant TASK_TTL = 1 days;
    uint64 internal constant DEFAULT_MAX_USES = 100;
    uint64 internal constant DEFAULT_EPS_TOTAL = 100 * EPS;

    bytes32 internal constant ALGO = keccak256("pcn/algorithms/psi@1.0.0");
    bytes32 internal constant PARAMS = keccak256("params");
    bytes32 internal constant RESULT = keccak256("result");

    Consortium internal consortium;
    AlgorithmRegistry internal algos;
    DatasetRegistry internal datasets;
    TaskManager internal tm;
    AuditLog internal auditLog;

    address internal admin;
    address internal alice;
    address internal bob;
    address internal carol;
    address internal dave;
    address internal outsider;
    uint256 internal aliceKey;
    uint256 internal bobKey;
    uint256 internal carolKey;
    uint256 internal daveKey;

    uint256 internal dsA;
    uint256 internal dsB;
    uint256 internal dsC;

    /// Request hashes computed by the test from the request fields (`_expectedRequestHash`),
    /// cached at submission so approvals need no call between `vm.prank` and the approval.
    mapping(uint256 taskId => bytes32) internal _requestHashOf;

    function setUp() public virtual {
        vm.warp(T0);
        admin = makeAddr("admin");
        outsider = makeAddr("outsider");
        (alice, aliceKey) = makeAddrAndKey("alice");
        (bob, bobKey) = makeAddrAndKey("bob");
        (carol, carolKey) = makeAddrAndKey("carol");
        (dave, daveKey) = makeAddrAndKey("dave");

        consortium = new Consortium(admin);
        algos = new AlgorithmRegistry(consortium);
        datasets = new DatasetRegistry(consortium);
        tm = new TaskManager(consortium, algos, datasets);
        datasets.setTaskManager(address(tm)); // by the DatasetRegistry deployer (this contract)
        auditLog = new AuditLog(consortium);

        _admit(alice, "Alice Hospital");
        _admit(bob, "Bob Insurance");
        _admit(carol, "Carol Bank");
        _admit(dave, "Dave Research");

        vm.prank(alice);
        algos.register(ALGO, "psi", "1.0.0", keccak256("psi description"));
        vm.prank(admin);
        algos.approve(ALGO, false);

        dsA = _registerDataset(alice, DEFAULT_MAX_USES, DEFAULT_EPS_TOTAL, "A");
        dsB = _registerDataset(bob, DEFAULT_MAX_USES, DEFAULT_EPS_TOTAL, "B");
        dsC = _registerDataset(carol, DEFAULT_MAX_USES, DEFAULT_EPS_TOTAL, "C");
    }

    // ------------------------------------------------------------------ consortium

    function _admit(address account, string memory name) internal {
        vm.prank(admin);
        consortium.admit(account, name, keccak256(abi.encode("x25519", account)), "https://peer.example/mailbox");
    }

    function _suspend(address account) internal {
        vm.prank(admin);
        consortium.suspend(account);
    }

    function _reinstate(address account) internal {
        vm.prank(admin);
        consortium.reinstate(account);
    }

    // ------------------------------------------------------------------ datasets

    function _fp(string memory tag) internal pure returns (DatasetRegistry.Fingerprint memory) {
        return DatasetRegistry.Fingerprint({
            merkleRoot: keccak256(abi.encode(tag, "root")),
            schemaHash: keccak256(abi.encode(tag, "schema")),
            metadataHash: keccak256(abi.encode(tag, "meta")),
            rowCount: 1000,
            registeredAt: 0
        });
    }

    function _limits(uint64 maxUses, uint64 epsilonTotal) internal pure returns (DatasetRegistry.PolicyLimits memory) {
        return DatasetRegistry.PolicyLimits({maxUses: maxUses, expiry: POLICY_EXPIRY, epsilonTotal: epsilonTotal});
    }

    function _members() internal view returns (address[] memory m) {
        m = new address[](4);
        m[0] = alice;
        m[1] = bob;
        m[2] = carol;
        m[3] = dave;
    }

    function _grants() internal view returns (DatasetRegistry.PolicyGrants memory g) {
        g.algorithms = new bytes32[](1);
        g.algorithms[0] = ALGO;
        g.requesters = _members();
        g.recipients = _members();
    }

    function _registerDataset(address owner, uint64 maxUses, uint64 epsilonTotal, string memory tag)
        internal
        returns (uint256 id)
    {
        DatasetRegistry.Fingerprint memory fp = _fp(tag);
        DatasetRegistry.PolicyLimits memory lim = _limits(maxUses, epsilonTotal);
        DatasetRegistry.PolicyGrants memory g = _grants();
        vm.prank(owner);
        id = datasets.register(fp, lim, g);
    }

    function _setLimits(uint256 id, uint64 maxUses, uint64 epsilonTotal) internal {
        address owner = datasets.ownerOf(id);
        vm.prank(owner);
        datasets.setPolicyLimits(id, _limits(maxUses, epsilonTotal));
    }

    function _uses(uint256 id) internal view returns (uint64) {
        return datasets.dataset(id).uses;
    }

    function _spent(uint256 id) internal view returns (uint64) {
        return datasets.dataset(id).epsilonSpent;
    }

    // ------------------------------------------------------------------ arrays

    function _ids(uint256 a) internal pure returns (uint256[] memory r) {
        r = new uint256[](1);
        r[0] = a;
    }

    function _ids(uint256 a, uint256 b) internal pure returns (uint256[] memory r) {
        r = new uint256[](2);
        r[0] = a;
        r[1] = b;
    }

    function _ids(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory r) {
        r = new uint256[](3);
        r[0] = a;
        r[1] = b;
        r[2] = c;
    }

    function _addrs(address a) internal pure returns (address[] memory r) {
        r = new address[](1);
        r[0] = a;
    }

    function _addrs(address a, address b) internal pure returns (address[] memory r) {
        r = new address[](2);
        r[0] = a;
        r[1] = b;
    }

    function _addrs(address a, address b, address c) internal pure returns (address[] memory r) {
        r = new address[](3);
        r[0] = a;
        r[1] = b;
        r[2] = c;
    }

    // ------------------------------------------------------------------ tasks

    function _request(uint256[] memory ids, address[] memory participants, uint64 epsilon)
        internal
        view
        returns (TaskManager.TaskRequest memory)
    {
        return TaskManager.TaskRequest({
            algorithmHash: ALGO,
            datasetIds: ids,
            participants: participants,
            paramsHash: PARAMS,
            resultRecipient: dave,
            deadline: uint64(block.timestamp) + TASK_TTL,
            epsilon: epsilon,
            minSurvivors: uint8(participants.length)
        });
    }

    /// The standard 3-party task: datasets A, B, C owned by alice, bob, carol; requester dave.
    function _stdRequest() internal view returns (TaskManager.TaskRequest memory) {
        return _request(_ids(dsA, dsB, dsC), _addrs(alice, bob, carol), EPS);
    }

    function _submit(address requester, TaskManager.TaskRequest memory r) internal returns (uint256 id) {
        vm.prank(requester);
        id = tm.submit(r);
        _remember(id);
    }

    /// The request hash of task `id` recomputed here from the task's public fields, the same
    /// formula as TaskManager's (and pcn.chain.binding.request_hash).
    function _expectedRequestHash(uint256 id) internal view returns (bytes32) {
        TaskManager.Task memory t = tm.task(id);
        (uint256[] memory ids, uint32[] memory versions) = tm.taskDatasets(id);
        bytes32[] memory roots = new bytes32[](ids.length);
        for (uint256 i = 0; i < ids.length; ++i) {
            roots[i] = datasets.fingerprint(ids[i], versions[i]).merkleRoot;
        }
        return keccak256(
            bytes.concat(
                abi.encode(block.chainid, address(tm), id, t.requester, t.algorithmHash),
                abi.encode(ids, versions, roots, tm.taskParticipants(id)),
                abi.encode(t.paramsHash, t.resultRecipient, t.deadline, t.epsilon, t.createdAt, tm.minSurvivors(id))
            )
        );
    }

    function _remember(uint256 id) internal {
        _requestHashOf[id] = _expectedRequestHash(id);
    }

    /// The cached request hash (zero for a task never submitted through `_submit`/`_remember`).
    function _rh(uint256 id) internal view returns (bytes32) {
        return _requestHashOf[id];
    }

    function _submitStd() internal returns (uint256) {
        return _submit(dave, _stdRequest());
    }

    function _approveAll(uint256 id) internal {
        _consentAll(id);
        (address[] memory owners, bool[] memory approved) = tm.taskApprovers(id);
        for (uint256 i = 0; i < owners.length; ++i) {
            if (approved[i]) continue;
            vm.prank(owners[i]);
            tm.approve(id, _rh(id));
        }
    }

    /// Every participant that owns no input dataset consents.
    function _consentAll(uint256 id) internal {
        (address[] memory parties, bool[] memory given) = tm.taskConsents(id);
        for (uint256 i = 0; i < parties.length; ++i) {
            if (given[i]) continue;
            vm.prank(parties[i]);
            tm.consent(id);
        }
    }

    function _startAll(uint256 id) internal {
        address[] memory parts = tm.taskParticipants(id);
        for (uint256 i = 0; i < parts.length; ++i) {
            vm.prank(parts[i]);
            tm.start(id);
        }
    }

    function _receipt(bytes32 resultHash, bytes32 algorithmHash) internal view returns (TaskManager.Receipt memory) {
        return TaskManager.Receipt({
            resultHash: resultHash,
            transcriptHash: keccak256("transcript"),
            inputFingerprint: keccak256("input"),
            algorithmHash: algorithmHash,
            deletionHash: keccak256("deleted"),
            startedAt: uint64(block.timestamp),
            finishedAt: uint64(block.timestamp)
        });
    }

    function _submitReceipt(uint256 id, address participant, bytes32 resultHash, bytes32 algorithmHash) internal {
        TaskManager.Receipt memory r = _receipt(resultHash, algorithmHash);
        vm.prank(participant);
        tm.submitReceipt(id, r);
    }

    function _receiptAll(uint256 id, bytes32 resultHash) internal {
        address[] memory parts = tm.taskParticipants(id);
        for (uint256 i = 0; i < parts.length; ++i) {
            _submitReceipt(id, parts[i], resultHash, ALGO);
        }
    }

    function _authorisedStd() internal returns (uint256 id) {
        id = _submitStd();
        _approveAll(id);
    }

    function _runningStd() internal returns (uint256 id) {
        id = _authorisedStd();
        _startAll(id);
    }

    function _status(uint256 id) internal view returns (PcnTypes.TaskStatus) {
        return tm.task(id).status;
    }

    function _pstate(uint256 id, address p) internal view returns (PcnTypes.ParticipantState) {
        return tm.participantState(id, p);
    }

    // ------------------------------------------------------------------ EIP-712, computed independently

    function _domainSeparator() internal view returns (bytes32) {
        return keccak256(
            abi.encode(EIP712_DOMAIN_TYPEHASH, keccak256("pcn TaskManager"), keccak256("1"), block.chainid, address(tm))
        );
    }

    function _approvalDigest(uint256 taskId, address owner, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(APPROVAL_TYPEHASH, taskId, _rh(taskId), owner, nonce, deadline));
        return keccak256(abi.encodePacked(hex"1901", _domainSeparator(), structHash));
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signApproval(uint256 key, uint256 taskId, address owner, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes memory)
    {
        return _sign(key, _approvalDigest(taskId, owner, nonce, deadline));
    }
}
