"""IAM that matches the code: what each Lambda function reaches, derived by reading the source, and the check that the
packaged template grants exactly that.

The chain, all of it static (``ast``; nothing is imported or run):

1. **Functions.** ``app.py``'s decorators name the Lambda functions: ``@app.lambda_function(name=...)``,
   ``@app.schedule``/``@app.on_cw_event``/``@app.on_sqs_message``/... (``name=`` or the Python name), and every
   ``@app.route`` in ``app.py`` and every decorated function of ``chalicelib/api/`` (``@bp.route`` or a declaration
   wrapper such as ``@endpoint(bp, ...)``) runs in the one ``api_handler``.
2. **Call graph.** From each entry point, through every module-level function of ``chalicelib`` it refers to
   (imports followed; ``tasks.run("order_capture", ...)`` resolves to the ``TASKS["order_capture"]`` entry only).
3. **Ports.** Each ``<anything>.<port>.<method>(...)`` where ``<port>`` is a field of ``Deps`` (``d.ledger.reserve``).
4. **Adapters.** ``chalicelib/bootstrap.py`` binds each port to an adapter class, the AWS service of the client it gets
   (``make_client(sess, "dynamodb")``) and the resources it gets (``cfg.ledger_table`` -> ``TESTBUY_LEDGER_TABLE`` ->
   the ``ledger`` table of ``infra/stack.json``).
5. **boto3 calls.** Each adapter method's ``self.<client>.<operation>(...)`` calls, through its own helper methods;
   :data:`IAM_ACTIONS` maps each operation to its IAM actions (``transact_write_items`` to the item kinds the method
   builds: ``Put``/``Update``/``Delete``/``ConditionCheck``). An operation missing from the table is an error.

:func:`expected_grants` is the result: function -> {(action, resource)}. ``testbuy.packaging`` writes each function's
role from it; :func:`check_template` reads a packaged template back and reports every difference, and the invariants
declared in ``infra/stack.json`` (``permissions``): only the declared money-moving functions write the ledger, only the
declared persona readers may read persona items, nobody may delete from the ledger or the data table.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbuy.infra import ROOT, StackDescription

API_HANDLER = "api_handler"
API_HANDLER_ID = "APIHandler"

# ------------------------------------------------------------------------------------------------ the mapping table

#: (service, client method) -> IAM actions. Complete for the calls the adapters make; extend it with each new call
#: (the check fails on an operation it does not know, naming it).
IAM_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("dynamodb", "get_item"): ("dynamodb:GetItem",),
    ("dynamodb", "batch_get_item"): ("dynamodb:BatchGetItem",),
    ("dynamodb", "transact_get_items"): ("dynamodb:GetItem",),
    ("dynamodb", "query"): ("dynamodb:Query",),
    ("dynamodb", "scan"): ("dynamodb:Scan",),
    ("dynamodb", "put_item"): ("dynamodb:PutItem",),
    ("dynamodb", "update_item"): ("dynamodb:UpdateItem",),
    ("dynamodb", "delete_item"): ("dynamodb:DeleteItem",),
    ("dynamodb", "batch_write_item"): ("dynamodb:BatchWriteItem",),
    # Authorised per item: see TRANSACT_ITEM_ACTIONS (the operation itself has no IAM action of its own).
    ("dynamodb", "transact_write_items"): (),
    ("events", "put_events"): ("events:PutEvents",),
    ("stepfunctions", "start_execution"): ("states:StartExecution",),
    ("stepfunctions", "send_task_success"): ("states:SendTaskSuccess",),
    ("stepfunctions", "send_task_failure"): ("states:SendTaskFailure",),
    ("stepfunctions", "send_task_heartbeat"): ("states:SendTaskHeartbeat",),
    ("stepfunctions", "describe_execution"): ("states:DescribeExecution",),
    ("stepfunctions", "stop_execution"): ("states:StopExecution",),
    ("stepfunctions", "list_executions"): ("states:ListExecutions",),
    ("s3", "put_object"): ("s3:PutObject",),
    ("s3", "get_object"): ("s3:GetObject",),
    ("s3", "head_object"): ("s3:GetObject",),
    ("secretsmanager", "get_secret_value"): ("secretsmanager:GetSecretValue",),
    ("secretsmanager", "describe_secret"): ("secretsmanager:DescribeSecret",),
    ("kms", "generate_mac"): ("kms:GenerateMac",),
    ("kms", "verify_mac"): ("kms:VerifyMac",),
    ("kms", "sign"): ("kms:Sign",),
    ("kms", "verify"): ("kms:Verify",),
    ("kms", "get_public_key"): ("kms:GetPublicKey",),  # evidence (issue 10 item 5)
    ("s3", "generate_presigned_url"): ("s3:GetObject",),  # the URL is signed with the function's credentials
    ("sqs", "send_message"): ("sqs:SendMessage",),
}
#: ``TransactItems`` entry kind -> the IAM action DynamoDB authorises it with.
TRANSACT_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}
#: Actions that write a DynamoDB table.
DDB_WRITES = frozenset(
    {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:ConditionCheckItem",
    }
)
#: Actions that return item contents (denied on persona items to every function that is not a declared reader).
DDB_READS = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan")
#: Actions whose resource is "*" because the API supports no resource-level permission.
UNSCOPED = frozenset({"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"})
#: Step Functions actions on an execution (resource: the machine's executions), not on the state machine.
ON_EXECUTIONS = frozenset(
    {"states:DescribeExecution", "states:StopExecution", "states:GetExecutionHistory", "states:RedriveExecution"}
)
#: Actions that read from an index as well as the table.
INDEXED = frozenset({"dynamodb:Query", "dynamodb:Scan"})
#: What every function gets besides its code's reach: its logs and its X-Ray segments.
BASELINE = (
    # Lambda creates the function's log group on first use when the role allows it (the template declares none).
    ("logs:CreateLogGroup", "logs"),
    ("logs:CreateLogStream", "logs"),
    ("logs:PutLogEvents", "logs"),
    ("xray:PutTraceSegments", "*"),
    ("xray:PutTelemetryRecords", "*"),
)

Grant = tuple[str, str]  # (action, resource key): "table:ledger", "table:ledger/index", "bus", "machine:order", ...


# ------------------------------------------------------------------------------------------------ source reading


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


@dataclass
class _Node:
    """A module-level function (or a dispatch-table entry) and what its body refers to."""

    name: str
    refs: set[str] = field(default_factory=set)
    ports: set[tuple[str, str]] = field(default_factory=set)
    #: (port, method) -> the literal first arguments it is called with; None: some call's is not a literal.
    keys: dict[tuple[str, str], set[str | None]] = field(default_factory=dict)
    secrets: bool = False


@dataclass
class CodeGraph:
    nodes: dict[str, _Node]
    entry_points: dict[str, list[str]]  # Lambda function name -> node names

    def reach(self, function: str) -> set[tuple[str, str]]:
        return set().union(*(self.nodes[n].ports for n in self.closure(function))) if function else set()

    def keys(self, function: str) -> dict[tuple[str, str], set[str | None]]:
        out: dict[tuple[str, str], set[str | None]] = {}
        for name in self.closure(function):
            for call, literals in self.nodes[name].keys.items():
                out.setdefault(call, set()).update(literals)
        return out

    def closure(self, function: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.entry_points[function])
        while todo:
            name = todo.pop()
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            todo.extend(self.nodes[name].refs)
        return seen

    def reads_secrets(self, function: str) -> bool:
        return any(self.nodes[n].secrets for n in self.closure(function))


_EVENT_DECORATORS = {
    "lambda_function",
    "schedule",
    "on_cw_event",
    "on_sqs_message",
    "on_sns_message",
    "on_s3_event",
    "on_dynamodb_record",
    "on_kinesis_record",
}
#: Calls that read a secret outside the adapters (powertools parameters or a raw client).
_SECRET_CALLS = {"get_secret", "get_secret_value"}


def _ports(root: Path) -> dict[str, set[str]]:
    """``Deps`` field -> the methods of its protocol in ``chalicelib/ports.py``."""
    protocols = {
        n.name: {m.name for m in n.body if isinstance(m, ast.FunctionDef)}
        for n in _parse(root / "chalicelib" / "ports.py").body
        if isinstance(n, ast.ClassDef)
    }
    deps = _parse(root / "chalicelib" / "services" / "deps.py")
    found: dict[str, set[str]] = {}

    def names(annotation: ast.expr) -> list[str]:
        """``Ledger``, ``Ledger | None``, ``Optional[Ledger]``, ``"Ledger"`` -> the names in it."""
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            return names(ast.parse(annotation.value, mode="eval").body)
        if isinstance(annotation, ast.BinOp):
            return names(annotation.left) + names(annotation.right)
        if isinstance(annotation, ast.Subscript):
            return names(annotation.slice)
        return [annotation.id] if isinstance(annotation, ast.Name) else []

    for cls in (n for n in deps.body if isinstance(n, ast.ClassDef) and n.name == "Deps"):
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                protocol = next((n for n in names(stmt.annotation) if n in protocols), None)
                if protocol is not None:
                    found[stmt.target.id] = protocols[protocol]
    return found


def _is_deps(node: ast.expr) -> bool:
    """``d``/``deps``/``self.deps`` or a ``deps()`` call: what holds the ports in services and handlers."""
    if isinstance(node, ast.Call):
        node = node.func
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in ("d", "deps", "_deps")


def build_graph(root: Path = ROOT) -> CodeGraph:
    files = [*sorted((root / "chalicelib").rglob("*.py")), root / "app.py"]
    modules = {_module_name(p, root): _parse(p) for p in files}
    ports = _ports(root)
    # Module-level functions and classes (a class is one node: referring to it reaches all its methods).
    functions: dict[str, set[str]] = {
        mod: {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        for mod, tree in modules.items()
    }
    tables: dict[str, dict[str, ast.expr]] = {}  # "mod.TASKS" -> key -> value expression
    for mod, tree in modules.items():
        for stmt in tree.body:
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign):
                target, value = stmt.target, stmt.value
            if isinstance(target, ast.Name) and isinstance(value, ast.Dict) and value.keys:
                keys = [_const_str(k) for k in value.keys]
                if all(k is not None for k in keys):
                    tables[f"{mod}.{target.id}"] = {str(k): v for k, v in zip(keys, value.values, strict=True)}

    nodes: dict[str, _Node] = {}
    dispatchers: dict[str, tuple[str, int]] = {}  # function -> (table, index of the argument that selects the entry)

    def imports(tree: ast.Module) -> dict[str, str]:
        names: dict[str, str] = {}
        for stmt in ast.walk(tree):
            if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.level == 0:
                for alias in stmt.names:
                    names[alias.asname or alias.name] = f"{stmt.module}.{alias.name}"
            elif isinstance(stmt, ast.Import):
                for alias in stmt.names:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name
        return names

    def resolve(mod: str, names: Mapping[str, str], node: ast.expr) -> str | None:
        """The dotted name of the module-level function or dispatch table ``node`` denotes, if any."""
        if isinstance(node, ast.Name):
            if node.id in functions.get(mod, ()) or f"{mod}.{node.id}" in tables:
                return f"{mod}.{node.id}"
            return names.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            base = names.get(node.value.id)
            if base is not None:
                return f"{base}.{node.attr}"
        return None

    def known(target: str | None) -> bool:
        if target is None:
            return False
        mod, _, name = target.rpartition(".")
        return name in functions.get(mod, ()) or target in tables

    def scan(node_name: str, mod: str, names: Mapping[str, str], body: Iterable[ast.AST], params: list[str]) -> _Node:
        out = _Node(node_name)
        selected: set[int] = set()
        method_bases: set[int] = set()
        called: set[int] = set()
        port_refs: list[ast.Attribute] = []
        for sub in (n for b in body for n in ast.walk(b)):
            if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Name) and sub.slice.id in params:
                table = resolve(mod, names, sub.value)
                if table in tables:
                    dispatchers[node_name] = (table, params.index(sub.slice.id))
                    selected.add(id(sub.value))
        for sub in (n for b in body for n in ast.walk(b)):
            if isinstance(sub, ast.Name | ast.Attribute) and id(sub) not in selected:
                target = resolve(mod, names, sub)
                if known(target):
                    out.refs.add(str(target))
            if (
                isinstance(sub, ast.Attribute)
                and isinstance(sub.value, ast.Attribute)
                and sub.value.attr in ports
                and sub.attr in ports[sub.value.attr]
            ):
                # d.ledger.reserve(...), or the bound method passed on: the port method is used.
                out.ports.add((sub.value.attr, sub.attr))
                method_bases.add(id(sub.value))
                out.keys.setdefault((sub.value.attr, sub.attr), set())
            if (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Attribute)
                and isinstance(sub.func.value, ast.Attribute)
                and sub.func.value.attr in ports
            ):
                literal = _const_str(sub.args[0]) if sub.args else None
                called.add(id(sub.func))
                out.keys.setdefault((sub.func.value.attr, sub.func.attr), set()).add(literal)
            if isinstance(sub, ast.Attribute) and sub.attr in ports:
                port_refs.append(sub)
            if isinstance(sub, ast.Call):
                func = sub.func
                fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if fname in _SECRET_CALLS:
                    out.secrets = True
        for ref in port_refs:
            if id(ref) not in method_bases and _is_deps(ref.value):
                # The port object itself escapes (aliased or passed on): assume every method of it is used.
                out.ports |= {(ref.attr, m) for m in ports[ref.attr]}
                for m in ports[ref.attr]:
                    out.keys.setdefault((ref.attr, m), set()).add(None)
        for sub in (n for b in body for n in ast.walk(b)):
            # A port method referred to without being called (passed on as a callable): any argument.
            owner = sub.value if isinstance(sub, ast.Attribute) else None
            if isinstance(sub, ast.Attribute) and isinstance(owner, ast.Attribute) and id(sub) not in called:
                call_key = (owner.attr, sub.attr)
                if call_key in out.keys:
                    out.keys[call_key].add(None)
        return out

    calls: list[tuple[str, str, ast.Call, str, Mapping[str, str]]] = []
    for mod, tree in modules.items():
        names = imports(tree)
        for stmt in tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = f"{mod}.{stmt.name}"
                params = [a.arg for a in stmt.args.args]
                nodes[qual] = scan(qual, mod, names, [*stmt.decorator_list, *stmt.body], params)
                calls += [(qual, mod, c, "", names) for c in ast.walk(stmt) if isinstance(c, ast.Call)]
            elif isinstance(stmt, ast.ClassDef) and not mod.startswith("chalicelib.adapters."):
                # Adapters are reached through the ports only; any other class counts as a whole.
                qual = f"{mod}.{stmt.name}"
                nodes[qual] = scan(qual, mod, names, [*stmt.decorator_list, *stmt.body], [])
        for table, entries in tables.items():
            if table.rpartition(".")[0] == mod:
                nodes[table] = _Node(table, refs={f"{table}[{k}]" for k in entries})
                for key, value in entries.items():
                    nodes[f"{table}[{key}]"] = scan(f"{table}[{key}]", mod, names, [value], [])
    # Calls with a literal key to a dispatcher reach that entry only.
    for caller, caller_mod, call, _, caller_names in calls:
        callee = resolve(caller_mod, caller_names, call.func)
        if callee is not None and callee in dispatchers:
            dispatch_table, index = dispatchers[callee]
            literal = _const_str(call.args[index]) if index < len(call.args) else None
            entry = f"{dispatch_table}[{literal}]" if literal in tables[dispatch_table] else dispatch_table
            nodes[caller].refs.add(entry)

    entry_points: dict[str, list[str]] = {API_HANDLER: []}
    for mod, tree in modules.items():
        for stmt in tree.body:
            if not isinstance(stmt, ast.FunctionDef):
                continue
            if stmt.decorator_list and mod.startswith("chalicelib.api."):
                # Every decorated view of the API package runs in the API handler, whether it is registered with
                # ``@bp.route`` or through a declaration wrapper (``@endpoint(bp, ...)``) that calls it.
                entry_points[API_HANDLER].append(f"{mod}.{stmt.name}")
                continue
            for deco in stmt.decorator_list:
                if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                    continue
                kind = deco.func.attr
                if kind in ("route", "middleware"):
                    entry_points[API_HANDLER].append(f"{mod}.{stmt.name}")
                elif kind in _EVENT_DECORATORS and mod == "app":
                    name = next((_const_str(k.value) for k in deco.keywords if k.arg == "name"), None)
                    entry_points.setdefault(name or stmt.name, []).append(f"{mod}.{stmt.name}")
    return CodeGraph(nodes, entry_points)


# ------------------------------------------------------------------------------------------------ adapters


@dataclass(frozen=True)
class Binding:
    """A port as ``bootstrap.build`` wires it: the adapter class(es) that may serve it (a factory function in
    ``chalicelib/adapters/`` may choose among several), each with the AWS service of its client (None: no client), and
    the resources ``infra/stack.json`` describes that it is given."""

    port: str
    impls: tuple[tuple[str, str | None], ...]
    resources: tuple[str, ...]
    #: A dict literal argument ``{"order": cfg.order_state_machine_arn, ...}``: key -> resource; a call whose first
    #: argument is always a literal key (``d.workflow.start("order", ...)``) reaches that resource only.
    selectors: tuple[tuple[str, str], ...] = ()


def _resource_keys(desc: StackDescription, root: Path) -> dict[str, str]:
    """Settings field -> resource key, through the environment variable both name (``chalicelib/config.py``)."""
    by_env: dict[str, str] = {}
    for key, spec in desc.tables.items():
        by_env[spec["env"]] = f"table:{key}"
    by_env[desc.raw["bucket"]["env"]] = "bucket"
    by_env[desc.raw["bus"]["env"]] = "bus"
    for key, spec in desc.raw["state_machines"].items():
        by_env[spec["env"]] = f"machine:{key}"
    for key, spec in desc.raw.get("secrets", {}).items():
        by_env[spec["env"]] = f"secret:{key}"
    for key, spec in desc.raw.get("keys", {}).items():
        by_env[spec["env"]] = f"key:{key}"
    config = _parse(root / "chalicelib" / "config.py")
    fields: dict[str, str] = {}
    for stmt in config.body:
        if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", "") == "_ENV":
            mapping = ast.literal_eval(stmt.value)
            fields = {f: by_env[env] for f, env in mapping.items() if env in by_env}
    return fields


def _client_service(expr: ast.expr, clients: Mapping[str, str]) -> str | None:
    """The AWS service of a client expression: ``make_client(sess, "s3")``, ``session.client("s3")`` or a variable
    holding one."""
    if isinstance(expr, ast.Name):
        return clients.get(expr.id)
    if not isinstance(expr, ast.Call):
        return None
    fname = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
    if fname == "make_client" and len(expr.args) >= 2:
        return _const_str(expr.args[1])
    if fname == "client" and isinstance(expr.func, ast.Attribute) and expr.args:
        return _const_str(expr.args[0])
    return None


def bindings(root: Path = ROOT, desc: StackDescription | None = None) -> dict[str, Binding]:
    desc = desc or StackDescription.load("prod", root)
    fields = _resource_keys(desc, root)
    classes = _adapter_classes(root)
    factories = {
        n.name: n
        for path in sorted((root / "chalicelib" / "adapters").glob("*.py"))
        for n in _parse(path).body
        if isinstance(n, ast.FunctionDef)
    }
    tree = _parse(root / "chalicelib" / "bootstrap.py")
    build = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build")
    clients: dict[str, str] = {}
    instances: dict[str, Binding] = {}

    def described(nodes: Iterable[ast.AST]) -> set[str]:
        return {fields[a.attr] for n in nodes for a in ast.walk(n) if isinstance(a, ast.Attribute) and a.attr in fields}

    def impl(call: ast.Call, local_clients: Mapping[str, str]) -> tuple[str, str | None]:
        args = [*call.args, *(k.value for k in call.keywords)]
        service = next((s for s in (_client_service(a, local_clients) for a in args) if s), None)
        return str(getattr(call.func, "id", "")), service

    def adapter_of(expr: ast.expr, port: str) -> Binding | None:
        if isinstance(expr, ast.Name) and expr.id in instances:
            b = instances[expr.id]
            return Binding(port, b.impls, b.resources, b.selectors)
        if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)):
            return None
        args = [*expr.args, *(k.value for k in expr.keywords)]
        name = expr.func.id
        if name in factories:
            # A factory choosing the adapter: every adapter class it may build, and every resource it reads.
            body = factories[name]
            calls = [c for c in ast.walk(body) if isinstance(c, ast.Call) and getattr(c.func, "id", "") in classes]
            impls = tuple(sorted({impl(c, {}) for c in calls}, key=lambda i: i[0]))
            return Binding(port, impls, tuple(sorted(described([*args, body]))))
        selectors = {
            str(_const_str(k)): next(iter(described([v])))
            for d in args
            if isinstance(d, ast.Dict)
            for k, v in zip(d.keys, d.values, strict=True)
            if k is not None and _const_str(k) is not None and len(described([v])) == 1
        }
        return Binding(port, (impl(expr, clients),), tuple(sorted(described(args))), tuple(sorted(selectors.items())))

    for stmt in ast.walk(build):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            var = stmt.targets[0].id
            service = _client_service(stmt.value, clients)
            if service:
                clients[var] = service
            else:
                found = adapter_of(stmt.value, var)
                if found is not None:
                    instances[var] = found
    result: dict[str, Binding] = {}
    for call in (n for n in ast.walk(build) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Deps"):
        for kw in call.keywords:
            if kw.arg is not None:
                found = adapter_of(kw.value, kw.arg)
                if found is not None:
                    result[kw.arg] = found
    return result


@dataclass
class _Method:
    ops: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)  # dict keys naming transaction/batch item kinds
    calls: set[str] = field(default_factory=set)


def _adapter_classes(root: Path) -> dict[str, ast.ClassDef]:
    return {
        n.name: n
        for path in sorted((root / "chalicelib" / "adapters").glob("*.py"))
        for n in _parse(path).body
        if isinstance(n, ast.ClassDef)
    }


def _class_chain(name: str, classes: Mapping[str, ast.ClassDef]) -> list[ast.ClassDef]:
    """The class and its adapter base classes, most derived first (single-inheritance order; enough here)."""
    chain: list[ast.ClassDef] = []
    todo = [name]
    while todo:
        cur = classes.get(todo.pop(0))
        if cur is None or cur in chain:
            continue
        chain.append(cur)
        todo.extend(b.id for b in cur.bases if isinstance(b, ast.Name))
    return chain


def adapter_clients(root: Path = ROOT) -> dict[str, set[str]]:
    """Adapter class -> the ``self`` attributes holding its boto3 client (assigned from a ``*client`` parameter of an
    ``__init__`` in the class or its adapter bases)."""
    classes = _adapter_classes(root)
    out: dict[str, set[str]] = {}
    for name in classes:
        attrs: set[str] = set()
        for cls in _class_chain(name, classes):
            for init in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
                params = {a.arg for a in init.args.args[1:] if a.arg.endswith("client")}
                for st in ast.walk(init):
                    if isinstance(st, ast.Assign) and isinstance(st.value, ast.Name) and st.value.id in params:
                        attrs |= {
                            t.attr
                            for t in st.targets
                            if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"
                        }
        out[name] = attrs
    return out


def _snake(op: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in op).lstrip("_")


def adapter_methods(
    root: Path = ROOT, only: Iterable[str] | None = None
) -> dict[str, dict[str, tuple[set[str], set[str]]]]:
    """Adapter class -> method -> (boto3 operations, item kinds), through the helper methods of the class and its
    adapter bases. The client passed anywhere but to one of its own methods is an error (the calls behind it could
    not be seen)."""
    classes = _adapter_classes(root)
    clients = adapter_clients(root)
    result: dict[str, dict[str, tuple[set[str], set[str]]]] = {}
    for cls_name in classes if only is None else [c for c in only if c in classes]:
        methods: dict[str, ast.FunctionDef] = {}
        for cls in reversed(_class_chain(cls_name, classes)):
            methods.update({n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)})
        client_attrs = clients[cls_name]
        raw: dict[str, _Method] = {}
        for name, fn in methods.items():
            m = _Method()
            via_attribute: set[int] = set()
            for sub in ast.walk(fn):
                if isinstance(sub, ast.Attribute):
                    via_attribute.add(id(sub.value))
            for sub in ast.walk(fn):
                if (
                    name != "__init__"
                    and isinstance(sub, ast.Attribute)
                    and getattr(sub.value, "id", "") == "self"
                    and sub.attr in client_attrs
                    and id(sub) not in via_attribute
                ):
                    raise IamCheckError(
                        f"{cls_name}.{name} passes its boto3 client (self.{sub.attr}) on: the IAM check cannot see "
                        "the calls made with it; call the client in the adapter's own methods"
                    )
                if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                    owner = sub.func.value
                    if isinstance(owner, ast.Attribute) and getattr(owner.value, "id", "") == "self":
                        if owner.attr in client_attrs:
                            op = sub.func.attr
                            if op == "get_paginator" and sub.args and _const_str(sub.args[0]):
                                op = _snake(str(_const_str(sub.args[0])))
                            m.ops.add(op)
                    elif isinstance(owner, ast.Name) and owner.id == "self" and sub.func.attr in methods:
                        m.calls.add(sub.func.attr)
                if isinstance(sub, ast.Dict):
                    m.kinds |= {
                        k
                        for k in map(_const_str, sub.keys)
                        if k in TRANSACT_ITEM_ACTIONS or k in ("PutRequest", "DeleteRequest", "IndexName")
                    }
                if isinstance(sub, ast.keyword) and sub.arg == "IndexName":
                    m.kinds.add("IndexName")
            raw[name] = m
        closed: dict[str, tuple[set[str], set[str]]] = {}
        for name in methods:
            ops: set[str] = set()
            kinds: set[str] = set()
            seen: set[str] = set()
            todo = [name]
            while todo:
                cur = todo.pop()
                if cur in seen:
                    continue
                seen.add(cur)
                ops |= raw[cur].ops
                kinds |= raw[cur].kinds
                todo.extend(raw[cur].calls)
            closed[name] = (ops, kinds)
        result[cls_name] = closed
    return result


class IamCheckError(RuntimeError):
    """The code makes a call the mapping cannot place; the message says what to add where."""


def operation_actions(service: str, operation: str, kinds: set[str]) -> set[str]:
    try:
        actions = set(IAM_ACTIONS[(service, operation)])
    except KeyError:
        raise IamCheckError(
            f"{service}.{operation} has no entry in testbuy.iam.IAM_ACTIONS: add its IAM action(s)"
        ) from None
    if (service, operation) == ("dynamodb", "transact_write_items"):
        actions |= {TRANSACT_ITEM_ACTIONS[k] for k in kinds if k in TRANSACT_ITEM_ACTIONS}
    return actions


# ------------------------------------------------------------------------------------------------ expected grants


@dataclass
class Reach:
    """What one Lambda function's code reaches."""

    function: str
    port_calls: set[tuple[str, str]]
    grants: set[Grant]
    #: (action, resource) -> a port call that needs it, for messages
    why: dict[Grant, str]
    deletes: set[str]  # resources a DeleteItem / DeleteRequest reaches
    reads_secrets: bool


def _reach_adapter(
    reach: Reach,
    bind: Binding,
    adapter: str,
    service: str,
    port: str,
    method: str,
    methods: Mapping[str, Mapping[str, tuple[set[str], set[str]]]],
    clients: Mapping[str, set[str]],
    desc: StackDescription,
    literals: set[str | None],
) -> None:
    if adapter not in methods:
        raise IamCheckError(f"{adapter} (port {port}) is not a class in chalicelib/adapters/")
    if not clients.get(adapter):
        raise IamCheckError(
            f"{adapter} gets a {service} client but no attribute of it is assigned from a "
            "constructor parameter named `client`: name it so, or the IAM check cannot follow its calls"
        )
    if method not in methods[adapter]:
        raise IamCheckError(f"{adapter} has no method {method!r} (port {port}); is the binding right?")
    ops, kinds = methods[adapter][method]
    for op in sorted(ops):
        for action in sorted(operation_actions(service, op, kinds)):
            targets = ["*"] if action in UNSCOPED else list(bind.resources)
            selectors = dict(bind.selectors)
            if targets != ["*"] and selectors and literals and all(k in selectors for k in literals):
                targets = sorted({selectors[str(k)] for k in literals})
            if action in ON_EXECUTIONS:
                targets = [r.replace("machine:", "execution:", 1) for r in targets]
            if not targets:
                raise IamCheckError(
                    f"{adapter}.{method} calls {service}.{op} but chalicelib/bootstrap.py gives "
                    "it no resource that infra/stack.json describes (pass it a cfg.<setting> whose env var "
                    "names one)"
                )
            for res in targets:
                grant = (action, res)
                reach.grants.add(grant)
                reach.why.setdefault(grant, f"{port}.{method} -> {adapter}.{method} -> {op}")
                indexed = action in INDEXED and "IndexName" in kinds and res.startswith("table:")
                if indexed and desc.tables[res.removeprefix("table:")]["indexes"]:
                    reach.grants.add((action, f"{res}/index"))
        deleting = op == "delete_item" or (
            bool(kinds & {"DeleteRequest", "Delete"}) and op in ("batch_write_item", "transact_write_items")
        )
        if deleting:
            reach.deletes.update(bind.resources)


def function_reach(root: Path = ROOT, desc: StackDescription | None = None) -> dict[str, Reach]:
    desc = desc or StackDescription.load("prod", root)
    graph = build_graph(root)
    binds = bindings(root, desc)
    methods = adapter_methods(root, {a for b in binds.values() for a, svc in b.impls if svc is not None})
    clients = adapter_clients(root)
    out: dict[str, Reach] = {}
    for function in graph.entry_points:
        calls = graph.reach(function)
        reach = Reach(function, calls, set(), {}, set(), graph.reads_secrets(function))
        keys = graph.keys(function)
        for port, method in sorted(calls):
            bind = binds.get(port)
            if bind is None:
                raise IamCheckError(f"{function} uses port {port!r}, which chalicelib/bootstrap.py does not wire")
            for adapter, service in bind.impls:
                if service is None:
                    continue
                literals = keys.get((port, method), {None})
                _reach_adapter(reach, bind, adapter, service, port, method, methods, clients, desc, literals)
        out[function] = reach
    return out


def permissions(desc: StackDescription) -> dict[str, Any]:
    return dict(desc.raw.get("permissions", {}))


def expected_grants(root: Path = ROOT, desc: StackDescription | None = None) -> dict[str, set[Grant]]:
    """Lambda function name -> every (action, resource) its role must allow, nothing more."""
    desc = desc or StackDescription.load("prod", root)
    secrets = desc.raw.get("secrets", {})
    out: dict[str, set[Grant]] = {}
    for name, reach in function_reach(root, desc).items():
        grants = set(reach.grants) | set(BASELINE)
        for key, spec in secrets.items():
            if name in spec.get("readers", ()):
                grants.add(("secretsmanager:GetSecretValue", f"secret:{key}"))
        out[name] = grants
    return out


# ------------------------------------------------------------------------------------------------ template check


def _resource_key(expr: Any, desc: StackDescription) -> str:
    """A policy ``Resource`` as written by ``testbuy.packaging.render_function_policy`` -> its resource key."""
    from testbuy import packaging as p

    ids = {p.table_id(k): f"table:{k}" for k in desc.tables}
    ids |= {p.BUCKET_ID: "bucket", p.BUS_ID: "bus"}
    ids |= {p.state_machine_id(k): f"machine:{k}" for k in desc.raw["state_machines"]}
    ids |= {p.secret_id(k): f"secret:{k}" for k in desc.raw.get("secrets", {})}
    ids |= {p.ASYNC_DLQ_ID: "dlq:async"}
    ids |= {p.key_id(k): f"key:{k}" for k in desc.raw.get("keys", {})}
    if expr == "*":
        return "*"
    if isinstance(expr, dict) and "Fn::GetAtt" in expr:
        return ids.get(expr["Fn::GetAtt"][0], json.dumps(expr))
    if isinstance(expr, dict) and "Ref" in expr:
        return ids.get(expr["Ref"], json.dumps(expr))
    if isinstance(expr, dict) and "Fn::Sub" in expr:
        text = expr["Fn::Sub"]
        for logical, key in ids.items():
            if text == f"${{{logical}.Arn}}/index/*":
                return f"{key}/index"
            if text == f"${{{logical}.Arn}}/*":
                return f"{key}/objects"
        if ":log-group:/aws/lambda/" in text:
            return "logs"
        if ":execution:" in text:
            for key, spec in desc.raw["state_machines"].items():
                if text.endswith(":execution:" + desc.name(spec["name"]) + ":*"):
                    return f"execution:{key}"
        if ":stateMachine:" in text:
            for key, spec in desc.raw["state_machines"].items():
                if text.endswith(":stateMachine:" + desc.name(spec["name"])):
                    return f"machine:{key}"
    return json.dumps(expr, sort_keys=True)


def granted(template: Mapping[str, Any], desc: StackDescription) -> dict[str, dict[str, set[Grant]]]:
    """Function logical id -> {"Allow": grants, "Deny": grants, "AllowIf"/"DenyIf": conditional ones} from its role's
    inline policies and every ``AWS::IAM::Policy``/``ManagedPolicy`` of the template attached to that role. A managed
    policy ARN on the role, or a role the template does not define, is reported as a grant the code never reaches."""
    resources = template["Resources"]
    attached: dict[str, list[dict[str, Any]]] = {}
    for res in resources.values():
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for role in res["Properties"].get("Roles", []):
                name = role.get("Ref") if isinstance(role, dict) else role
                attached.setdefault(str(name), []).append(res["Properties"]["PolicyDocument"])
    out: dict[str, dict[str, set[Grant]]] = {}
    for fid, res in resources.items():
        if res["Type"] not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        role_ref = res["Properties"].get("Role")
        effect: dict[str, set[Grant]] = {"Allow": set(), "Deny": set()}
        if isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref and role_ref["Fn::GetAtt"][0] in resources:
            role_id = role_ref["Fn::GetAtt"][0]
            role = resources[role_id]["Properties"]
            documents = [p["PolicyDocument"] for p in role.get("Policies", [])] + attached.get(role_id, [])
            for document in documents:
                statements = document["Statement"]
                for st in [statements] if isinstance(statements, dict) else statements:
                    if "Action" not in st or "Resource" not in st:
                        # NotAction/NotResource grant everything else: never what the code reaches.
                        effect.setdefault(st["Effect"], set()).add(("NotAction/NotResource", json.dumps(st)))
                        continue
                    actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
                    targets = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                    kind = st["Effect"] if "Condition" not in st else f"{st['Effect']}If"
                    effect.setdefault(kind, set())
                    for a in actions:
                        for r in targets:
                            effect[kind].add((a, _resource_key(r, desc)))
            if role.get("ManagedPolicyArns"):
                effect["Allow"].add(("managed-policies", json.dumps(role["ManagedPolicyArns"])))
        else:
            effect["Allow"].add(("unknown-role", json.dumps(role_ref)))
        out[fid] = effect
    return out


def _normalise(grants: Iterable[Grant]) -> set[Grant]:
    """S3 object actions are granted on ``bucket/*``: compare them as such."""
    return {(a, f"{r}/objects" if r == "bucket" and a.startswith("s3:") else r) for a, r in grants}


def check_template(template: Mapping[str, Any], root: Path = ROOT, stage: str = "prod") -> list[str]:
    """Every way the template's function roles differ from what the code reaches, and every broken invariant."""
    from testbuy.packaging import chalice_logical_id

    desc = StackDescription.load(stage, root)
    perms = permissions(desc)
    reach = function_reach(root, desc)
    expected = expected_grants(root, desc)
    roles = granted(template, desc)
    problems: list[str] = []
    ids = {API_HANDLER_ID if n == API_HANDLER else chalice_logical_id(n): n for n in reach}
    for fid in sorted(set(roles) - set(ids)):
        problems.append(f"{fid}: a function in the template that no decorator in app.py declares")
    async_functions = {f for f, r in template["Resources"].items() if _is_async(r)}
    for fid, name in sorted(ids.items()):
        if fid not in roles:
            problems.append(f"{name}: declared in app.py but missing from the template")
            continue
        want = _normalise(expected[name])
        if fid in async_functions:
            want.add(("sqs:SendMessage", "dlq:async"))
        have = _normalise(roles[fid]["Allow"])
        for action, res in sorted(want - have):
            via = reach[name].why.get((action, res.removesuffix("/objects")), "baseline")
            problems.append(f"{name}: code reaches {action} on {res} ({via}) but its role does not grant it")
        for action, res in sorted(have - want):
            problems.append(f"{name}: role grants {action} on {res}, which its code never reaches")
        # --- invariants (declared in infra/stack.json "permissions") ---
        ledger_writes = {a for a, r in want | have if r == "table:ledger" and a in DDB_WRITES}
        if ledger_writes and name not in perms.get("money_moving", []):
            problems.append(
                f"{name}: writes the ledger ({', '.join(sorted(ledger_writes))}) but is not declared money-moving "
                "in infra/stack.json permissions.money_moving"
            )
        for table in perms.get("no_delete_tables", []):
            if ("dynamodb:DeleteItem", f"table:{table}") in have or f"table:{table}" in reach[name].deletes:
                problems.append(f"{name}: may delete items from the {table} table")
            if ("dynamodb:DeleteItem", f"table:{table}") not in roles[fid].get("Deny", set()):
                problems.append(f"{name}: its role lacks the explicit Deny of dynamodb:DeleteItem on the {table} table")
        for table in perms.get("no_batch_write_tables", []):
            if ("dynamodb:BatchWriteItem", f"table:{table}") in have:
                problems.append(f"{name}: BatchWriteItem on the {table} table can delete items")
            if ("dynamodb:BatchWriteItem", f"table:{table}") not in roles[fid].get("Deny", set()):
                problems.append(f"{name}: its role lacks the explicit Deny of dynamodb:BatchWriteItem on {table}")
        custody = perms.get("custody_items")
        if custody and ("dynamodb:BatchWriteItem", f"table:{custody['table']}") not in roles[fid].get("DenyIf", set()):
            problems.append(f"{name}: its role does not deny BatchWriteItem on custody partitions")
        personas = perms.get("persona_items", {})
        if personas:
            readers = set(personas.get("readers", []))
            reads = {m for p, m in reach[name].port_calls if p == "personas"} - set(personas.get("write_only", []))
            if reads and name not in readers:
                problems.append(
                    f"{name}: reads persona items ({', '.join(sorted(reads))}) but is not a declared persona reader"
                )
            denied = roles[fid].get("DenyIf", set())
            if name not in readers and not {(a, f"table:{personas['table']}") for a in DDB_READS} <= denied:
                problems.append(f"{name}: its role does not deny reading persona items")
        for key, spec in desc.raw.get("secrets", {}).items():
            if reach[name].reads_secrets and name not in spec.get("readers", []):
                problems.append(f"{name}: reads a secret but is not a declared reader of secret {key}")
    return problems


def _is_async(resource: Mapping[str, Any]) -> bool:
    events = resource.get("Properties", {}).get("Events", {}) or {}
    return any(e.get("Type") in ASYNC_EVENT_TYPES for e in events.values())


#: SAM event sources that invoke a function asynchronously (its failures go to its DeadLetterQueue).
ASYNC_EVENT_TYPES = frozenset({"Schedule", "CloudWatchEvent", "EventBridgeRule", "SNS", "S3"})


def coverage(root: Path = ROOT) -> dict[str, list[str]]:
    """Function -> sorted ``action resource`` lines (``python -m testbuy.checks iam --show``)."""
    return {f: sorted(f"{a} {r}" for a, r in g) for f, g in sorted(expected_grants(root).items())}
