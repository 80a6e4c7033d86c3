-- Issue 9 item 25: resp:json() returned integers as floats (an id printed
-- as 1.0; a 64-bit id lost its last digits). Now a JSON number written
-- without a fraction or an exponent is a Lua integer when it fits in 64
-- bits; every other number is a float.
local tidal = require("tidal")
local http = require("tidal.http")
local support = require("support")
local fixtures = require("fixtures.http")

if not support.can_spawn then
  describe("issue 9 item 25: resp:json() keeps integers", function()
    pending("needs the fixture server (a child process)")
  end)
  return
end

describe("issue 9 item 25: resp:json() keeps integers", function()
  local srv, url

  setup(function()
    srv = fixtures.start_server()
    url = srv.url
  end)

  teardown(function()
    fixtures.stop_server(srv)
  end)

  -- the server sends the text back; resp:json() decodes it
  local function decode(text)
    local r = assert(http.post(url("/reflect"), text))
    assert.are.equal(text, r.body)
    return r:json()
  end

  local function is_int(v, expected)
    assert.are.equal("integer", math.type(v), tostring(v))
    assert.are.equal(expected, v)
  end

  local function is_float(v, expected)
    assert.are.equal("float", math.type(v), tostring(v))
    if expected ~= expected then
      assert.is_true(v ~= v)
    else
      assert.are.equal(expected, v)
    end
  end

  it("ids, nested arrays and negatives are integers", function()
    support.run(function()
      local doc = decode('{"id": 1, "items": [[1, [2, [3]]], {"n": -5}], "zero": 0, "neg0": -0}')
      is_int(doc.id, 1)
      assert.are.equal("1", tostring(doc.id))
      is_int(doc.items[1][1], 1)
      is_int(doc.items[1][2][1], 2)
      is_int(doc.items[1][2][2][1], 3)
      is_int(doc.items[2].n, -5)
      is_int(doc.zero, 0)
      is_int(doc.neg0, 0)
      is_int(decode("42"), 42)
      is_int(decode(" [ -7 ] ")[1], -7)
    end)
  end)

  it("64-bit integers are exact; beyond 64 bits they are floats", function()
    support.run(function()
      local doc = decode('[9223372036854775807, -9223372036854775808, 1234567890123456789,'
        .. ' 9223372036854775808, -9223372036854775809, 123456789012345678901234567890]')
      is_int(doc[1], math.maxinteger)
      is_int(doc[2], math.mininteger)
      is_int(doc[3], 1234567890123456789) -- a float would give ...6800
      is_float(doc[4], 2.0 ^ 63)
      is_float(doc[5], -(2.0 ^ 63))
      is_float(doc[6], 1.2345678901234568e29)
    end)
  end)

  it("fractions and exponents stay floats, even with an integral value", function()
    support.run(function()
      local doc = decode('[1.0, 1e3, 1E2, 2.5, -0.0, 1.5e1, 1e-2, 0.1]')
      is_float(doc[1], 1.0)
      assert.are.equal("1.0", tostring(doc[1]))
      is_float(doc[2], 1000.0)
      is_float(doc[3], 100.0)
      is_float(doc[4], 2.5)
      is_float(doc[5], 0.0)
      assert.are.equal(-math.huge, 1 / doc[5]) -- the sign is kept
      is_float(doc[6], 15.0)
      is_float(doc[7], 0.01)
      is_float(doc[8], 0.1)
    end)
  end)

  it("decodes strings, literals, null and structures as lua-cjson does", function()
    support.run(function()
      local cjson = require("cjson")
      local doc = decode('{"s": "a\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00", "t": true,'
        .. ' "f": false, "z": null, "e": {}, "a": [], "dup": 1, "dup": 2, "": "empty",'
        .. ' "nul": "x\\u0000y", "list": [1, null, 3]}')
      assert.are.equal('a"b\\c/d\n\té😀', doc.s)
      assert.is_true(doc.t)
      assert.is_false(doc.f)
      assert.are.equal(cjson.null, doc.z)
      assert.are.equal(http.null, doc.z)
      assert.are.same({}, doc.e)
      assert.are.same({}, doc.a)
      is_int(doc.dup, 2)
      assert.are.equal("empty", doc[""])
      assert.are.equal("x\0y", doc.nul)
      assert.are.equal(3, #doc.list)
      assert.are.equal(http.null, doc.list[2])
      -- a leading byte order mark is skipped
      is_int(decode("\239\187\191[5]")[1], 5)
      -- 1000 levels of nesting are fine
      local deep = decode(("["):rep(1000) .. ("]"):rep(1000))
      for _ = 1, 999 do deep = deep[1] end
      assert.are.same({}, deep)
    end)
  end)

  it("invalid JSON is nil and a protocol error that says where", function()
    support.run(function()
      local cases = {
        { "{not json", "expected a string" },
        { "[1,]", "expected a value" },
        { "[01]", "leading zero" },
        { "[1.]", "decimal point" },
        { "[1e]", "exponent" },
        { "[-]", "expected a digit" },
        { "NaN", "expected a value" },
        { "[Infinity]", "expected a value" },
        { "[1] x", "unexpected data after the document" },
        { '"a\1b"', "control character" },
        { '"\\ud800"', "lone surrogate" },
        { '"\\udc00x"', "lone surrogate" },
        { '"\\x41"', "invalid escape" },
        { '"\\u12"', "invalid \\u escape" },
        { '"abc', "unterminated string" },
        { "[1, 2", "expected ',' or ']'" },
        { '{"a" 1}', "expected ':'" },
        { "tru", "unexpected character" },
        { "", "expected a value at the end" },
        { ("["):rep(1001) .. ("]"):rep(1001), "nested too deep" },
      }
      for _, c in ipairs(cases) do
        local r = assert(http.post(url("/reflect"), c[1]))
        local v, err = r:json()
        assert.is_nil(v, c[1])
        assert.is_true(tidal.is_error(err, "protocol"), c[1])
        assert.is_truthy(tostring(err):find(c[2], 1, true), c[1] .. " -> " .. tostring(err))
        assert.is_truthy(tostring(err):find(url("/reflect"), 1, true), tostring(err))
        assert.are.equal(url("/reflect"), err.url)
      end
      -- positions are 1-based bytes
      local _, err = assert(http.post(url("/reflect"), "[1, x]")):json()
      assert.is_truthy(tostring(err):find("at byte 5 ('x')", 1, true), tostring(err))
    end)
  end)
end)
