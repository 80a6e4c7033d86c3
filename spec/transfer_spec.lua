-- Values that cross between Lua states (DESIGN.md section 5), through
-- tidal.testhooks, a test-only module built beside tidal.core in the test
-- trees (never installed): copy (to a fresh lua_State and back), run (call
-- a copied function in a fresh state), encode / decode / discard (the
-- bytes), and the probe handle type (probe).
local support = require("support")
local hooks = require("tidal.testhooks")

local copy, run = hooks.copy, hooks.run
local encode, decode, discard = hooks.encode, hooks.decode, hooks.discard

local function full_gc()
  collectgarbage()
  collectgarbage()
end

-- The error message of f(...), which must fail.
local function refusal(f, ...)
  local ok, err = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

-- Buffers by hand, for malformed-input tests (see csrc/transfer.c).
local function varint(n)
  local out = {}
  repeat
    local b = n % 128
    n = n // 128
    out[#out + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(out)
end
local function buffer(n, ...)
  return "\xA0" .. varint(n) .. table.concat({ ... })
end

describe("value transfer", function()
  describe("copies", function()
    it("every scalar type, keeping integer and float apart", function()
      support.run(function()
        local values = { true, false, 0, 1, -1, 127, 128, -129, 2 ^ 31, math.maxinteger,
          math.mininteger, 0.0, -0.0, 0.1, 1 / 3, 2 ^ 53, 1e308, -math.huge, math.huge, 3.0 }
        local n = #values
        local r = table.pack(copy(table.unpack(values, 1, n)))
        assert.equal(n, r.n)
        for i = 1, n do
          assert.equal(values[i], r[i])
          assert.equal(math.type(values[i]), math.type(r[i]), "math.type of value " .. i)
        end
        assert.equal(-math.huge, 1 / r[13]) -- -0.0 stays negative
        local nan = copy(0 / 0)
        assert.is_true(nan ~= nan)
        assert.equal("float", math.type(nan))
      end)
    end)

    it("nil, also in the middle and at the end", function()
      support.run(function()
        local r = table.pack(copy(nil, 1, nil, nil))
        assert.equal(4, r.n)
        assert.same({ n = 4, [2] = 1 }, r)
        assert.equal(0, select("#", copy()))
      end)
    end)

    it("binary strings, short and long", function()
      support.run(function()
        local bytes = {}
        for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
        local all = table.concat(bytes)
        for _, s in ipairs({ "", "\0", "a\0b", all, all:rep(300), ("x"):rep(63), ("x"):rep(64),
          ("\0"):rep(1000) }) do
          local c = copy(s)
          assert.equal(#s, #c)
          assert.is_true(s == c)
        end
      end)
    end)

    it("nested tables, with every kind of key", function()
      support.run(function()
        local key = { "table key" }
        local t = {
          1, 2, "three", { 4, { 5 } },
          name = "x",
          [1.5] = "float key",
          [true] = "true key",
          [false] = { deep = { deeper = { deepest = "yes" } } },
          [-7] = "negative",
          [2 ^ 60] = "big",
          [key] = "table as key",
          ["with space"] = 1,
          ["\0"] = "zero key",
        }
        local c = copy(t)
        assert.are_not.equal(t, c)
        assert.equal("x", c.name)
        assert.same({ 4, { 5 } }, c[4])
        assert.equal("float key", c[1.5])
        assert.equal("true key", c[true])
        assert.equal("yes", c[false].deep.deeper.deepest)
        assert.equal("negative", c[-7])
        assert.equal("big", c[2 ^ 60])
        assert.equal("zero key", c["\0"])
        local found
        for k, v in pairs(c) do
          if v == "table as key" then found = k end
        end
        assert.same({ "table key" }, found)
        assert.are_not.equal(key, found)
      end)
    end)

    it("arrays with holes, and tables with many keys", function()
      support.run(function()
        local holes = { 1, nil, 3, nil, nil, 6 }
        local c = copy(holes)
        for i = 1, 6 do assert.equal(holes[i], c[i]) end
        local wide = {}
        for i = 1, 300 do wide["k" .. i] = i end -- the key count needs two bytes
        assert.same(wide, copy(wide))
        local long = {}
        for i = 1, 300 do long[i] = i end -- so does the array count
        assert.same(long, copy(long))
        local reversed = {} -- integer keys in the hash part, any order
        for i = 300, 1, -1 do reversed[i] = -i end
        reversed.x = "x"
        assert.same(reversed, copy(reversed))
        local sparse = { [1] = 1, [2] = 2, [4] = 4, [1000] = 1000, [-1] = -1, [0] = 0 }
        assert.same(sparse, copy(sparse))
      end)
    end)

    it("shared references and cycles", function()
      support.run(function()
        local shared = { "shared" }
        local t = { a = shared, b = shared, list = { shared, shared } }
        t.self = t
        t[t] = t
        local c = copy(t)
        assert.equal(c.a, c.b)
        assert.equal(c.a, c.list[1])
        assert.equal(c.a, c.list[2])
        assert.equal(c, c.self)
        assert.equal(c, c[c])
        assert.are_not.equal(shared, c.a)
        -- across arguments too
        local x, y, z = copy(shared, t, shared)
        assert.equal(x, z)
        assert.equal(x, y.a)
        -- a back reference costs a few bytes, not a second copy
        assert.is_true(#encode(t, t) < #encode(t) + 4)
      end)
    end)

    it("gives copies that do not touch the original", function()
      support.run(function()
        local t = { 1, 2, inner = { x = 1 } }
        local c = copy(t)
        c[1] = 100
        c.inner.x = 2
        c.new = true
        assert.same({ 1, 2, inner = { x = 1 } }, t)
      end)
    end)

    it("plain tables: metatables are not copied", function()
      support.run(function()
        local t = setmetatable({ v = 1 }, { __index = function() return "meta" end })
        local c = copy(t)
        assert.is_nil(getmetatable(c))
        assert.is_nil(c.other)
        assert.equal(1, c.v)
      end)
    end)

    it("the globals table as the receiving state's globals", function()
      support.run(function()
        assert.equal(_G, copy(_G))
        local r = run(function(g) return g == _G, rawget(g, "xfer_marker") end, _G)
        assert.is_true(r)
      end)
    end)

    it("a large table (100k array items and 100k keys)", function()
      support.run(function()
        local n = support.scaled(100000)
        local t = { sub = {} }
        for i = 1, n do
          t[i] = i * 2
          t["k" .. i] = i + 0.5
        end
        for i = 1, n // 10 do t.sub[i] = { i } end
        local c = copy(t)
        assert.equal(n, #c)
        for i = 1, n do
          assert.equal(i * 2, c[i])
          assert.equal(i + 0.5, c["k" .. i])
        end
        for i = 1, n // 10 do assert.equal(i, c.sub[i][1]) end
      end)
    end)
  end)

  describe("functions", function()
    it("work in the copy, with their upvalues copied", function()
      support.run(function()
        local base = { 10 }
        local scale = 3
        local function f(x) return (x + base[1]) * scale end
        local g = copy(f)
        assert.are_not.equal(f, g)
        assert.equal(36, g(2))
        base[1] = 0 -- the copy has its own base
        assert.equal(36, g(2))
        assert.equal(6, f(2))
      end)
    end)

    it("run in the receiving state, whose globals are their _ENV", function()
      support.run(function()
        xfer_marker = "sender's" -- luacheck: ignore
        local r1, r2, r3 = run(function(a, b)
          return a + b, rawget(_G, "xfer_marker"), string.rep("ab", 2)
        end, 1, 2)
        xfer_marker = nil -- luacheck: ignore
        assert.equal(3, r1)
        assert.is_nil(r2)
        assert.equal("abab", r3)
        -- a function with its own environment gets the receiver's globals
        local env = { x = "private" }
        local f = assert(load("return x, _ENV", "=chunk", "t", env))
        local g = copy(f)
        local x, e = g()
        assert.is_nil(x)
        assert.equal(_G, e)
        assert.equal("_ENV", (debug.getupvalue(g, 1)))
      end)
    end)

    it("keep upvalues shared between closures copied together", function()
      support.run(function()
        local function counter()
          local n = 0
          return function() n = n + 1; return n end, function() return n end
        end
        local inc, get = counter()
        local inc2, get2 = copy(inc, get)
        inc2()
        inc2()
        assert.equal(2, get2())
        assert.equal(0, get())
        -- inside a table too
        local t = copy({ inc = inc, get = get })
        t.inc()
        assert.equal(1, t.get())
        assert.equal(2, get2()) -- separate copies do not share
        -- and with run: the function and its argument share a cell
        assert.equal(1, run(function(i, g) i(); return g() end, inc, get))
        assert.equal(0, get())
      end)
    end)

    it("keep recursion, identity and upvalues that are arguments too", function()
      support.run(function()
        local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end
        local f2 = copy(fact)
        assert.equal(120, f2(5))
        assert.equal(f2, select(2, debug.getupvalue(f2, 1)))
        local a, b = copy(fact, fact)
        assert.equal(a, b)
        local t = {}
        local function get() return t end
        local g, t2 = copy(get, t)
        assert.equal(t2, g())
      end)
    end)

    it("keep debug information (names, lines)", function()
      support.run(function()
        local function boom() error("boom") end
        local ok, err = pcall(copy(boom))
        assert.is_false(ok)
        assert.matches("transfer_spec.lua:%d+: boom", err)
      end)
    end)
  end)

  describe("handles", function()
    it("are shared by reference", function()
      support.run(function()
        local p = hooks.probe(5)
        local q = copy(p)
        assert.are_not.equal(p, q)
        assert.equal(5, q:get())
        q:set(7)
        assert.equal(7, p:get())
        run(function(x) x:set(9) end, p)
        assert.equal(9, p:get())
        -- the same handle twice in one message is one userdata
        local a, b = copy(p, { p })
        assert.equal(a, b[1])
      end)
    end)

    it("count their references, back to the baseline after collection", function()
      full_gc()
      local live0 = hooks.probe_live()
      support.run(function()
        local p = hooks.probe()
        assert.equal(1, p:refs())
        local q = copy(p)
        assert.equal(2, p:refs())
        local t = copy({ p, p, { p } })
        assert.equal(3, p:refs())
        q, t = nil, nil
        full_gc()
        assert.equal(1, p:refs())
        assert.equal(live0 + 1, hooks.probe_live())
      end)
      full_gc()
      assert.equal(live0, hooks.probe_live())
    end)

    it("are released by a discarded buffer, decoded or not", function()
      full_gc()
      local live0 = hooks.probe_live()
      support.run(function()
        local p = hooks.probe()
        local s = encode(p, { p })
        assert.equal(2, p:refs()) -- the buffer holds one
        local a = decode(s)
        local b = decode(s) -- a buffer may be decoded many times
        assert.equal(4, p:refs())
        b:set(3)
        assert.equal(3, a:get())
        a, b = nil, nil
        full_gc()
        assert.equal(2, p:refs())
        discard(s)
        assert.equal(1, p:refs())
        discard(encode(1, "x")) -- nothing to release: a no-op
      end)
      full_gc()
      assert.equal(live0, hooks.probe_live())
    end)

    it("are released when the copy is refused", function()
      support.run(function()
        local p = hooks.probe()
        local msg = refusal(copy, p, { p, string.gmatch("", "") })
        assert.matches("C function at args%[2%]%[2%]", msg)
        assert.equal(1, p:refs())
        p:close()
        assert.equal("cannot copy closed tidal.XProbe at args.x", refusal(copy, { x = p }))
      end)
    end)
  end)

  describe("refuses", function()
    it("what cannot be copied, naming the path", function()
      support.run(function()
        local co = coroutine.create(print)
        local light = debug.upvalueid(refusal, 1)
        local cfn = string.gmatch("", "") -- a C function in no loaded module
        local only = " (only C functions of loaded modules can be copied)"
        assert.equal("cannot copy C function at args" .. only, refusal(copy, cfn))
        assert.equal("cannot copy C function at args[2].f" .. only, refusal(copy, 1, { f = cfn }))
        assert.equal("cannot copy coroutine at args.co", refusal(copy, { co = co }))
        assert.equal("cannot copy userdata (FILE*) at args[2].conn", refusal(copy, 1, { conn = io.stdout }))
        assert.equal("cannot copy light userdata at args[3]", refusal(copy, 1, 2, light))
        assert.equal('cannot copy C function at args.a.b[3]["x y"][2]' .. only,
          refusal(copy, { a = { b = { [3] = { ["x y"] = { 1, cfn } } } } }))
        assert.equal('cannot copy coroutine at args["end"]', refusal(copy, { ["end"] = co }))
        assert.equal("cannot copy userdata (FILE*) at args<key>", refusal(copy, { [io.stdout] = 1 }))
        assert.equal("cannot copy coroutine at results[2]",
          refusal(run, function() return 1, coroutine.create(print) end))
      end)
    end)

    it("in upvalues, naming them", function()
      support.run(function()
        local conn = io.stdout
        local state = { co = coroutine.create(print) }
        local function f() return conn end
        local function g() return state end
        assert.equal("cannot copy userdata (FILE*) at args[1]<upvalue conn>", refusal(copy, f, 2))
        assert.equal("cannot copy coroutine at args.handler<upvalue state>.co",
          refusal(copy, { handler = g }))
      end)
    end)

    it("values nested too deeply, with a short path", function()
      support.run(function()
        local function chain(n)
          local t = {}
          for _ = 2, n do t = { a = t } end
          return t
        end
        copy(chain(1000)) -- the limit
        local msg = refusal(copy, chain(1001))
        assert.matches("^cannot copy table at args%.a%.a.*%.%.%..*%.a %(nested too deeply%)$", msg)
        assert.is_true(#msg < 200)
        -- the decoder has the same limit
        local deep = ("\6\0\1\65a"):rep(1000) .. "\6\0\0"
        assert.matches("nested too deeply", refusal(decode, buffer(1, deep)))
        decode(buffer(1, ("\6\0\1\65a"):rep(999) .. "\6\0\0"))
      end)
    end)
  end)

  describe("the encoding", function()
    it("is compact", function()
      support.run(function()
        assert.equal("\xA0\1\x80", encode(0))
        assert.equal("\xA0\1\xAA", encode(42))
        assert.equal("\xA0\1\3\1", encode(-1))
        assert.equal("\xA0\1\2", encode(true))
        assert.equal("\xA0\1\x45hello", encode("hello"))
        assert.equal("\xA0\2\0\0", encode(nil, nil))
        assert.equal(11, #encode(1.5))
        assert.equal("\xA0\1\6\2\1\x81\x82\x41a\x83", encode({ 1, 2, a = 3 }))
      end)
    end)
  end)

  describe("malformed buffers", function()
    -- a buffer with one of everything but handles
    local function sample()
      local up = { "up" }
      local function f(x) return x, up end
      local t = { 1, 2.5, "s", ("long"):rep(30), f, { f }, k = true, [3.5] = -9 }
      t.self = t
      return encode(t, f, nil, math.mininteger)
    end

    it("round-trip when intact", function()
      support.run(function()
        local t, f, none, m = decode(sample())
        assert.equal(t, t.self)
        assert.equal(f, t[5])
        assert.is_nil(none)
        assert.equal(math.mininteger, m)
        assert.equal("up", select(2, f(1))[1])
      end)
    end)

    it("give errors when truncated anywhere", function()
      support.run(function()
        local s = sample()
        for i = 0, #s - 1 do
          assert.matches("malformed transfer buffer", refusal(decode, s:sub(1, i)))
        end
        assert.matches("trailing bytes", refusal(decode, s .. "\0"))
      end)
    end)

    it("give errors for bad tags, indices and keys", function()
      support.run(function()
        local cases = {
          ["bad header"] = "",
          ["bad header "] = "\xA2\1\0",
          ["bad tag"] = buffer(1, "\x20"),
          ["bad tag "] = buffer(1, "\11\0\1"), -- a shared upvalue outside a function
          ["bad back reference"] = buffer(1, "\9\0"),
          ["bad back reference "] = buffer(1, "\6\1\0\9\1"),
          ["nil table key"] = buffer(1, "\6\0\1\0\1"),
          ["NaN table key"] = buffer(1, "\6\0\1\4" .. string.pack("=d", 0 / 0) .. "\1"),
          ["truncated"] = buffer(1, "\6" .. varint(2 ^ 40) .. "\0"),
          ["truncated "] = buffer(1, "\5" .. varint(2 ^ 62) .. "abc"),
          ["bad varint"] = buffer(1, "\3" .. ("\xff"):rep(11)),
          ["unexpected handle"] = buffer(1, "\8\0" .. ("\0"):rep(16)),
          ["truncated  "] = "\xA0\5\1\1",
        }
        for want, s in pairs(cases) do
          assert.matches(want:gsub(" +$", ""), refusal(decode, s), 1, true)
        end
      end)
    end)

    it("refuse bytecode or handles that fail their MAC", function()
      support.run(function()
        local function f(a) return a + 1 end
        local s = encode(f)
        -- header 2, tag 1, nups 1, length 4, MAC 8: the bytecode starts at 17
        local function flip(str, i)
          return str:sub(1, i - 1) .. string.char(str:byte(i) ~ 0x20) .. str:sub(i + 1)
        end
        assert.equal(2, decode(s)(1))
        for _, i in ipairs({ 9, 17, 20, 30, #s - 2, #s }) do
          assert.matches("fails its MAC", refusal(decode, flip(s, i)))
        end
        assert.matches("wrong upvalue count", refusal(decode, flip(s, 4)))
        local p = hooks.probe()
        local h = encode(p)
        for i = 4, #h do -- the type, the pointer, the MAC
          assert.matches("malformed", refusal(decode, flip(h, i)))
        end
        discard(h)
        assert.equal(1, p:refs())
      end)
    end)

    it("never crash on random input", function()
      support.run(function()
        local s = sample()
        local rnd = math.random
        math.randomseed(42)
        for _ = 1, support.scaled(20000) do
          local m
          if rnd() < 0.5 then -- mutate a valid buffer
            local b = { s:byte(1, -1) }
            for _ = 1, rnd(1, 4) do b[rnd(#b)] = rnd(0, 255) end
            m = string.char(table.unpack(b))
          else -- random bytes behind a valid header
            local b = {}
            for i = 1, rnd(0, 40) do b[i] = rnd(0, 255) end
            m = "\xA0" .. string.char(table.unpack(b))
          end
          pcall(decode, m)
        end
      end)
    end)
  end)
end)
