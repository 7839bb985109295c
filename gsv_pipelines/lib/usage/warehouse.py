"""The usage warehouse (GSV_WAREHOUSE_URL: PostgreSQL in prod, a SQLite file locally).

Tables come from their declarations in usage_tables. A partition is written by deleting its day
and inserting its rows (COPY on PostgreSQL), for every table an asset owns, in one transaction: a
re-run replaces a day exactly, a failed one leaves the previous rows, and readers never see half a
day. Frames are validated against the declaration (pandera) before anything is written.
"""

import functools
import io
import math
from collections.abc import Mapping
from datetime import date

import pandas as pd
import pandera.pandas as pa
import sqlalchemy as sa
from pandera.engines import pandas_engine
from sqlalchemy.pool import NullPool

from gsv_pipelines.lib.usage.tables import ALL_TABLES, Column, Table

# One lock id for DDL: parallel partitions creating the same table must not race in PostgreSQL.
_DDL_LOCK = 0x6773765F75736167  # "gsv_usag"
_SQL_TYPES = {
    "date": sa.Date,
    "text": sa.Text,
    "int": sa.BigInteger,
    "float": lambda: sa.Float(53),
    "money": lambda: sa.Numeric(14, 2, asdecimal=False),
    "timestamp": sa.DateTime,
}


class WarehouseError(RuntimeError):
    """The warehouse cannot be written or read."""


class SchemaViolation(ValueError):
    """A frame does not match its table's declaration; the message lists what is wrong."""


@functools.cache
def engine(url: str) -> sa.Engine:
    """One engine per warehouse and process (NullPool: it holds no connection between uses)."""
    if url.startswith("sqlite"):
        # Parallel partitions write the same file: wait for the lock rather than fail.
        return sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": 120})
    return sa.create_engine(url, poolclass=NullPool)


# (warehouse URL, table) known to exist in this process: tables are created, never dropped.
_EXISTING: set[tuple[str, str]] = set()


_METADATA = sa.MetaData()
SA_TABLES = {
    spec.name: sa.Table(
        spec.name,
        _METADATA,
        *[
            sa.Column(
                c.name,
                _SQL_TYPES[c.type](),
                nullable=c.nullable,
                primary_key=c.name in spec.key,
                comment=c.description,
            )
            for c in spec.columns
        ],
        comment=spec.description,
    )
    for spec in ALL_TABLES
}


def ensure_tables(conn: sa.Connection, specs: list[Table]) -> None:
    """Create the tables that do not exist yet (in the caller's transaction)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _DDL_LOCK})
    _METADATA.create_all(conn, tables=[SA_TABLES[s.name] for s in specs], checkfirst=True)


def _pandera_column(column: Column) -> pa.Column:
    checks = []
    if column.min is not None:
        checks.append(pa.Check.ge(column.min))
    if column.max is not None:
        checks.append(pa.Check.le(column.max))
    if column.isin is not None:
        checks.append(pa.Check.isin(list(column.isin)))
    dtype = {
        "date": pandas_engine.Date(),
        "text": str,
        "int": "Int64" if column.nullable else "int64",
        "float": "float64",
        "money": "float64",
        "timestamp": pandas_engine.DateTime(unit="us"),
    }[column.type]
    return pa.Column(dtype, checks=checks, nullable=column.nullable, coerce=True)


def pandera_schema(spec: Table) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {c.name: _pandera_column(c) for c in spec.columns},
        strict=True,
        ordered=True,
        unique=list(spec.key),
        name=spec.name,
    )


def validate(spec: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame, coerced to the declared types; SchemaViolation listing every failure."""
    try:
        return pandera_schema(spec).validate(frame[spec.column_names], lazy=True)
    except KeyError as exc:
        raise SchemaViolation(f"{spec.name}: missing column(s) {exc}") from None
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        lines = [
            f"{row.column}: {row.check} (e.g. {row.failure_case!r})"
            for row in cases.drop_duplicates(["column", "check"]).itertuples()
        ]
        raise SchemaViolation(f"{spec.name}: " + "; ".join(lines)) from None


def _records(frame: pd.DataFrame) -> list[dict]:
    records = frame.astype(object).to_dict("records")
    for record in records:
        for key, value in record.items():
            if (
                value is pd.NaT
                or value is pd.NA
                or (isinstance(value, float) and math.isnan(value))
            ):
                record[key] = None
            elif isinstance(value, pd.Timestamp):
                record[key] = value.to_pydatetime()
    return records


def write_partition(url: str, day: date, frames: Mapping[Table, pd.DataFrame]) -> dict[str, int]:
    """Replace `day` in each table with its frame, all in one transaction; rows per table."""
    validated = {spec: validate(spec, frame) for spec, frame in frames.items()}
    for spec, frame in validated.items():
        wrong = set(frame["day"]) - {day}
        if wrong:
            raise SchemaViolation(f"{spec.name}: rows for {sorted(wrong)} in partition {day}")
    missing = [spec for spec in validated if (url, spec.name) not in _EXISTING]
    try:
        with engine(url).begin() as conn:
            if missing:
                ensure_tables(conn, missing)
            for spec, frame in validated.items():
                table = SA_TABLES[spec.name]
                conn.execute(table.delete().where(table.c.day == day))
                if frame.empty:
                    continue
                if conn.dialect.name == "postgresql":
                    _copy(conn, spec, frame)
                else:
                    conn.execute(table.insert(), _records(frame))
    except sa.exc.OperationalError as exc:
        raise WarehouseError(f"cannot write the warehouse: {exc.orig}") from None
    _EXISTING.update((url, spec.name) for spec in missing)
    return {spec.name: len(frame) for spec, frame in validated.items()}


def _copy(conn: sa.Connection, spec: Table, frame: pd.DataFrame) -> None:
    """COPY a validated frame into its table (PostgreSQL's text format)."""
    columns = [_copy_text(frame[c.name], c) for c in spec.columns]
    lines = columns[0].str.cat(columns[1:], sep="\t") + "\n"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(
            f"COPY {spec.name} ({', '.join(spec.column_names)}) FROM STDIN",
            io.StringIO("".join(lines)),
        )
    finally:
        cursor.close()


def _copy_text(values: pd.Series, column: Column) -> pd.Series:
    """A column in COPY's text format: \\N for NULL, backslash escapes in text."""
    missing = values.isna()
    if column.type == "text":
        text = values.astype(object).where(~missing, "").astype(str)
        if text.str.contains(r"[\\\t\n\r]", regex=True).any():
            for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
                text = text.str.replace(char, escaped, regex=False)
    elif column.type == "timestamp":
        text = values.dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    elif column.type in ("float", "money"):
        text = pd.Series([repr(float(v)) for v in values], index=values.index)
    else:  # date, int
        text = values.astype(object).astype(str)
    return text.where(~missing, "\\N")


def read(url: str, spec: Table, first: date, last: date) -> pd.DataFrame:
    """Rows of `spec` for the days first..last (inclusive); empty when the table is missing."""
    table = SA_TABLES[spec.name]
    with engine(url).connect() as conn:
        if (url, spec.name) not in _EXISTING:
            if not sa.inspect(conn).has_table(spec.name):
                return _empty(spec)
            _EXISTING.add((url, spec.name))
        query = table.select().where(table.c.day >= first, table.c.day <= last)
        if conn.dialect.name == "postgresql":
            frame = _fetch(conn, query, spec)
        else:
            frame = pd.read_sql(query, conn)
    if frame.empty:
        return _empty(spec)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def _fetch(conn: sa.Connection, query: sa.Select, spec: Table) -> pd.DataFrame:
    """The query's rows through the DBAPI cursor (much cheaper than read_sql's row processing);
    NUMERIC arrives as Decimal."""
    compiled = query.compile(dialect=conn.dialect)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(str(compiled), compiled.params)
        frame = pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description])
    finally:
        cursor.close()
    for column in spec.columns:
        if column.type == "money":
            frame[column.name] = frame[column.name].astype("float64")
    return frame


def _empty(spec: Table) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in spec.column_names})
